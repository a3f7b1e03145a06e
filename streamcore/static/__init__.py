"""The browser client (``streamcore.js``) and the demo chat page, served by ``streamcore serve``."""
