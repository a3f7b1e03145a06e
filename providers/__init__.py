"""Built-in providers, registered under the ``streamcore.providers`` entry-point group.

Each module is imported only when its provider is loaded, so that importing streamcore
never pulls in an SDK (litellm alone takes seconds and 160 MB).
"""
