"""The gateway's HTTP front (aiohttp): JSON endpoints and the dashboard."""
