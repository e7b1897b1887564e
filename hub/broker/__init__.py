"""MQTT broker: the embedded amqtt broker and broker URL handling."""

from hub.broker.embedded import BrokerError, EmbeddedBroker, parse_mqtt_url

__all__ = ["BrokerError", "EmbeddedBroker", "parse_mqtt_url"]
