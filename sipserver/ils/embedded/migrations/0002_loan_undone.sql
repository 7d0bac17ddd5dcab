-- sipserver embedded ILS schema, version 2: a loan remembers that its latest renewal was cancelled.
--
-- A checkin with cancel (BI=Y) undoes the loan's latest renewal and sets undone = 1. Terminals
-- resend on any doubt, and a resend on a new connection reaches the backend; without the mark a
-- second cancel would find a plain loan and undo the checkout under the renewal. A new renewal
-- sets it back to 0. Existing loans get 0: nothing of theirs has been cancelled.

ALTER TABLE loans ADD COLUMN undone INTEGER NOT NULL DEFAULT 0;
