CREATE TABLE alerts (
    id              uuid PRIMARY KEY,
    message         text        NOT NULL CHECK (length(message) BETWEEN 1 AND 2000),
    type            text        NOT NULL,
    priority        text        NOT NULL CHECK (priority IN ('critical', 'high', 'medium', 'low')),
    region          text        NOT NULL,
    latitude        double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude       double precision CHECK (longitude BETWEEN -180 AND 180),
    acknowledged    boolean     NOT NULL DEFAULT false,
    acknowledged_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The list is always newest first; filters narrow it by one column at a time.
CREATE INDEX alerts_created_at_idx ON alerts (created_at DESC, id DESC);
CREATE INDEX alerts_type_idx ON alerts (type, created_at DESC);
CREATE INDEX alerts_priority_idx ON alerts (priority, created_at DESC);
CREATE INDEX alerts_region_idx ON alerts (region, created_at DESC);
