"""Real peers (servers, links) that tests start and stop themselves."""
