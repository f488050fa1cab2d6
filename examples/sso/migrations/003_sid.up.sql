-- The sid claim: the login session an ID token was issued in, as the
-- client's sector sees it (an HMAC of the session's ID; the session's ID
-- itself is only in the session store). '' for what was issued before.
ALTER TABLE auth_requests ADD COLUMN sid text NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN sid text NOT NULL DEFAULT '';
