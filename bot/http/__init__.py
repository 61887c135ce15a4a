"""jarvis over HTTP: a JSON API, an event stream, metrics and a web page.

Off by default; ``http.listen`` turns it on. It runs on the bot's own event loop
(aiohttp's server is asyncio through and through, so a request is served by the
same engine, store and ACL as a chat line, with no second process to keep in step),
started and stopped by the composition root (``bot.app.Jarvis``).
"""
