"""Make the audit table append-only on PostgreSQL: UPDATE, DELETE and TRUNCATE raise.

Statement-level triggers, so even a statement that matches no row is refused. TRUNCATE has one
door, for test databases that Django flushes between transactional tests: a session (or
database) setting ``governance.audit_truncate_allowed = on``. It never opens UPDATE or DELETE,
and production never sets it. (Anyone able to drop the trigger can bypass it anyway; the hash
chain, checked by ``manage.py audit_verify``, is what detects such tampering.)

Other database vendors (SQLite for the single-host run) get nothing: this migration is a no-op
there.
"""

from django.db import migrations

INSTALL = [
    """
    CREATE OR REPLACE FUNCTION governance_auditevent_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE'
           AND current_setting('governance.audit_truncate_allowed', true) = 'on' THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'governance_auditevent is append-only: % is not allowed', TG_OP
            USING ERRCODE = 'integrity_constraint_violation';
    END;
    $$
    """,
    """
    CREATE TRIGGER governance_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON governance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION governance_auditevent_append_only()
    """,
    """
    CREATE TRIGGER governance_auditevent_no_truncate
    BEFORE TRUNCATE ON governance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION governance_auditevent_append_only()
    """,
]

REMOVE = [
    "DROP TRIGGER IF EXISTS governance_auditevent_no_truncate ON governance_auditevent",
    "DROP TRIGGER IF EXISTS governance_auditevent_no_update_delete ON governance_auditevent",
    "DROP FUNCTION IF EXISTS governance_auditevent_append_only()",
]


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in INSTALL:
        schema_editor.execute(statement, params=None)


def remove(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in REMOVE:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [("governance", "0004_vocabulary_defaults")]

    operations = [migrations.RunPython(install, remove)]
