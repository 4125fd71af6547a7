"""The Docker setup of the README (docs/Dockerfile, docs/docker-compose.yml, docs/tradecanvas-docker.json), tested
without a Docker daemon: the compose service publishes the chart server on the host's loopback and passes the
token through the environment; the container's settings (the shipped config plus the Docker section, merged by
freqtrade's own loader, plus the compose environment) parse and start the server on 0.0.0.0, which answers a
browser's `Host: 127.0.0.1:8090` reaching it through the published port (the container's own address)."""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

import pytest
import yaml
from freqtrade.configuration.load_config import load_from_files

from tests.botkit import REPO
from tradecanvas_ext import Runtime, Settings
from tradecanvas_ext.settings import ConfigError
from tradecanvas_ext.web.app import create_app

DOCS = REPO / "docs"
TOKEN = "a-docker-token-0123456789"


def compose_service() -> dict:
    return yaml.safe_load((DOCS / "docker-compose.yml").read_text())["services"]["freqtrade"]


def container_env(service: dict) -> dict:
    """The service's environment with `${VAR...}` taken from what the operator exports (here: the token)."""
    exported = {"TRADECANVAS_API_TOKEN": TOKEN}
    return {k: re.sub(r"\$\{(\w+)[^}]*\}", lambda m: exported[m.group(1)], str(v))
            for k, v in service["environment"].items()}


def container_config(service: dict, env: dict, monkeypatch) -> dict:
    """The --config files of the compose command, merged the way freqtrade merges them (the shipped example
    config.json as the user's config, then docs/tradecanvas-docker.json), then its FREQTRADE__ variables
    (freqtrade's Configuration.load_config: the environment wins)."""
    from freqtrade.configuration.environment_vars import environment_vars_to_dict
    from freqtrade.misc import deep_merge_dicts

    configs = re.findall(r"--config (\S+)", service["command"])
    assert configs == ["/freqtrade/user_data/config.json", "/freqtrade/user_data/tradecanvas-docker.json"]
    config = load_from_files([str(REPO / "config.json"), str(DOCS / "tradecanvas-docker.json")])
    with monkeypatch.context() as m:
        for k in [k for k in os.environ if k.startswith("FREQTRADE__")]:
            m.delenv(k)
        for k, v in env.items():
            m.setenv(k, v)
        return deep_merge_dicts(environment_vars_to_dict(), config)


def test_the_compose_service_publishes_on_the_host_loopback_with_the_token_from_the_environment():
    service = compose_service()
    assert "127.0.0.1:8090:8090" in service["ports"]
    assert all(p.startswith("127.0.0.1:") for p in service["ports"])  # nothing on the host's other interfaces
    assert service["build"]["dockerfile"] == "./Dockerfile"
    assert service["environment"]["FREQTRADE__TRADECANVAS__API_TOKEN"].startswith("${TRADECANVAS_API_TOKEN")
    assert "api_token" not in json.loads((DOCS / "tradecanvas-docker.json").read_text())["tradecanvas"]
    dockerfile = (DOCS / "Dockerfile").read_text()
    assert "FROM freqtradeorg/freqtrade:stable" in dockerfile
    assert "RUN pip install --user --no-cache-dir /tmp/wheels/tradecanvas_ext-*.whl" in dockerfile


def test_the_container_settings_need_the_token_and_start_the_server(tmp_path, monkeypatch):
    service = compose_service()
    env = container_env(service)
    with pytest.raises(ConfigError, match="api_token"):
        Settings.from_config(container_config(service, {}, monkeypatch), env={})  # without the compose environment: refused
    config = container_config(service, env, monkeypatch)
    section = config["tradecanvas"]
    assert (section["listen_ip_address"], section["listen_port"]) == ("0.0.0.0", 8090)
    settings = Settings.from_config(config, env=env)
    assert settings.api_token == TOKEN and settings.listen_ip_address == "0.0.0.0"

    # the same settings, on a free port and a store of this test (the container's is /freqtrade/user_data)
    config["tradecanvas"].update(listen_port=0, db_url=f"sqlite:///{tmp_path / 'tc.sqlite'}")
    rt = Runtime(Settings.from_config(config, env=env)).start(serve=True, startup_sync=False)
    try:
        port = int(rt.url.rsplit(":", 1)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/market/health", timeout=10) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/market/series", timeout=10)
        assert refused.value.code == 401
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/market/series",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert len(json.loads(r.read())["series"]) == 3

        # behind `-p 127.0.0.1:8090:8090` the connection reaches the container's own address while the
        # browser names the host's loopback
        class ContainerSocket:
            def getsockname(self):
                return ("172.17.0.2", 8090)

        app = create_app(rt)
        behind = {"SERVER_NAME": "0.0.0.0", "SERVER_PORT": "8090", "werkzeug.socket": ContainerSocket()}
        client = app.test_client()
        for host in ("127.0.0.1:8090", "localhost:8090", "172.17.0.2:8090"):
            assert client.get("/api/market/health", headers={"Host": host},
                              environ_overrides=behind).status_code == 200, host
        assert client.get("/api/market/health", headers={"Host": "evil.example:8090"},
                          environ_overrides=behind).status_code == 403
    finally:
        rt.stop()
