-- The catalog's version: a counter bumped by every statement that changes movies, so a
-- reader (the gateway's movie snapshot) polls one row and reloads only after a change.
CREATE TABLE catalog_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  bigint  NOT NULL
);
INSERT INTO catalog_version (version) VALUES (1);

CREATE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_version SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER movies_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON movies
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
