"""The web service (`rides serve`): the quick model's answer at once, the stream's after (app: the
ASGI app; service: the work apart from HTTP; schema: the contract; auth: the API keys)."""
