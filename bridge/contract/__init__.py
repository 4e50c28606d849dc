"""The wire contract as pydantic models: every MQTT payload and every WebSocket message.

``catalog`` says which message goes on which topic or endpoint; ``bridge/asyncapi.py`` turns
it into docs/asyncapi.json. Each module says whether the code validates with its models or
whether they are the schema that tests hold the code's fast builders to.
"""
