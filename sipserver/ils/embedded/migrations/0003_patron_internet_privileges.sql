-- sipserver embedded ILS schema, version 3: a patron's internet privileges.
--
-- PC-booking systems (Libki, Envisionware) decide a patron's access by a profile name the ILS
-- keeps for them, sent in 64's PI extension when an account's reply profile asks for it. Free
-- text, as the ILS names its profiles ("Filtered", "Adult", "None"); existing patrons get ''
-- (not known), so PI is not sent for them.

ALTER TABLE patrons ADD COLUMN internet_privileges TEXT NOT NULL DEFAULT '';
