"""The asyncio bot: chat adapters, the command grammar, access control, design
sources and notifications. It drives ``clipboard`` and never imports ``workers``."""
