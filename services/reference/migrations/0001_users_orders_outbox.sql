-- The application's own data, in the main database (never in the jobs
-- database: the runbook keeps the two apart so that a job backlog cannot
-- slow down requests, and either can be restored without the other).

CREATE TABLE users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text NOT NULL,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    total_cents bigint NOT NULL CHECK (total_cents >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_user_id_idx ON orders (user_id);

CREATE TABLE order_items (
    order_id         bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position         int NOT NULL,
    sku              text NOT NULL,
    quantity         int NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, position)
);

-- The transactional outbox: domain events written by the transaction that
-- caused them, relayed to the jobs database afterwards (at least once).
CREATE TABLE outbox_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    relayed_at  timestamptz,
    -- Set instead of relayed_at when the event cannot be turned into jobs
    -- (written by a newer release, or by hand); kept for a person to look at.
    relay_error text
);

-- The relay only ever reads pending rows; keep that scan small however long
-- the history grows.
CREATE INDEX outbox_events_pending_idx ON outbox_events (id)
    WHERE relayed_at IS NULL AND relay_error IS NULL;

-- Emails already handed to the mail transport, by Message-ID: a job run twice
-- (a retry after a lost outcome, a duplicate relay) sends once.
CREATE TABLE email_deliveries (
    message_id text PRIMARY KEY,
    recipient  text NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now()
);
