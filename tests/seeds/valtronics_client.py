"""The Python client of the Valtronics seed document, verbatim (seeds/valtronics-websocket-api.txt).

Kept as the seed wrote it; tests/seeds/test_seed_clients.py drives it against the bridge,
adapting only the URL, the token and device names.
"""

# ruff: noqa
# mypy: ignore-errors
import asyncio
import json
import websockets
from datetime import datetime


class ValtronicsWebSocketClient:
    def __init__(self, url, token):
        self.url = url
        self.token = token
        self.websocket = None
        self.subscriptions = {}
        self.running = False

    async def connect(self):
        """Connect to WebSocket server"""
        try:
            self.websocket = await websockets.connect(self.url)
            await self.authenticate()
            self.running = True
            print("WebSocket connected successfully")
        except Exception as e:
            print(f"Failed to connect: {e}")
            raise

    async def authenticate(self):
        """Authenticate with JWT token"""
        auth_message = {"type": "auth", "token": self.token}
        await self.send_message(auth_message)

        # Wait for authentication response
        response = await self.websocket.recv()
        data = json.loads(response)

        if data.get("type") == "auth_response" and data.get("success"):
            print("Authentication successful")
        else:
            raise Exception("Authentication failed")

    async def subscribe(self, channel, filters=None):
        """Subscribe to a channel"""
        subscription = {"type": "subscribe", "channel": channel}
        if filters:
            subscription["filters"] = filters

        await self.send_message(subscription)
        self.subscriptions[channel] = filters
        print(f"Subscribed to {channel}")

    async def unsubscribe(self, channel):
        """Unsubscribe from a channel"""
        unsubscription = {"type": "unsubscribe", "channel": channel}
        await self.send_message(unsubscription)
        self.subscriptions.pop(channel, None)
        print(f"Unsubscribed from {channel}")

    async def send_message(self, message):
        """Send message to WebSocket"""
        if self.websocket:
            await self.websocket.send(json.dumps(message))

    async def listen(self):
        """Listen for incoming messages"""
        try:
            while self.running:
                message = await self.websocket.recv()
                data = json.loads(message)
                await self.handle_message(data)
        except websockets.exceptions.ConnectionClosed:
            print("WebSocket connection closed")
        except Exception as e:
            print(f"Error listening for messages: {e}")

    async def handle_message(self, data):
        """Handle incoming messages"""
        message_type = data.get("type")

        if message_type == "telemetry_update":
            await self.handle_telemetry_update(data)
        elif message_type == "alert":
            await self.handle_alert(data)
        elif message_type == "device_status_update":
            await self.handle_device_status_update(data)
        elif message_type == "system_status_update":
            await self.handle_system_status_update(data)
        elif message_type == "pong":
            # Handle keep-alive response
            pass
        else:
            print(f"Unknown message type: {message_type}")

    async def handle_telemetry_update(self, data):
        """Handle telemetry updates"""
        device_id = data.get("device_id")
        telemetry = data.get("telemetry")
        print(f"Telemetry update for device {device_id}: {telemetry}")

    async def handle_alert(self, data):
        """Handle alert notifications"""
        alert_id = data.get("alert_id")
        severity = data.get("severity")
        title = data.get("title")
        print(f"Alert [{severity}]: {title} (ID: {alert_id})")

    async def handle_device_status_update(self, data):
        """Handle device status updates"""
        device_id = data.get("device_id")
        old_status = data.get("old_status")
        new_status = data.get("new_status")
        print(f"Device {device_id} status changed: {old_status} -> {new_status}")

    async def handle_system_status_update(self, data):
        """Handle system status updates"""
        metrics = data.get("metrics")
        print(f"System status update: {metrics}")

    async def ping(self):
        """Send ping message (keep-alive)"""
        ping_message = {"type": "ping", "timestamp": datetime.utcnow().isoformat()}
        await self.send_message(ping_message)

    async def disconnect(self):
        """Disconnect from WebSocket"""
        self.running = False
        if self.websocket:
            await self.websocket.close()
            print("WebSocket disconnected")
