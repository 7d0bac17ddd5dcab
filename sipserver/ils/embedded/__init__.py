"""The embedded small ILS: circulation, holds, fees and rules as SQL transaction functions, with
its sqlite and PostgreSQL backends."""
