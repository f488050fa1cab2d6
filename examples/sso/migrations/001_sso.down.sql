DROP TABLE signing_keys, consents, tokens, auth_requests, subjects, clients, users, sso_settings;
