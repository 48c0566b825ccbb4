-- Who may write what. A token has a role (admin, site, reader) instead of an admin flag; a Site token names its
-- Site and the other roles none. Every collection records the Site that owns it: that Site's tokens (and
-- admins) may write it; NULL is a survey collection that only admins write, which existing collections become.
ALTER TABLE api_token ADD COLUMN role text NOT NULL DEFAULT 'site' CHECK (role IN ('admin', 'site', 'reader'));
UPDATE api_token SET role = 'admin', site = NULL WHERE is_admin;
ALTER TABLE api_token DROP COLUMN is_admin;  -- and with it the CHECK (is_admin OR site IS NOT NULL)
ALTER TABLE api_token ALTER COLUMN role DROP DEFAULT;
ALTER TABLE api_token ADD CONSTRAINT api_token_site_scope CHECK ((role = 'site') = (site IS NOT NULL));

ALTER TABLE collection ADD COLUMN site text;
CREATE INDEX collection_site ON collection (site) WHERE site IS NOT NULL;
