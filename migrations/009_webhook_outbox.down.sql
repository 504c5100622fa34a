-- credgate migration 009_webhook_outbox (down)

DROP TABLE IF EXISTS credgate_webhook_outbox;
