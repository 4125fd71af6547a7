"""The HTTP API and WebSocket route (Flask + flask-sock) and the server thread serving them. Imports point
inward (runtime services, domain); nothing outside web/ but the runtime imports it."""
