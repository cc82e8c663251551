"""`dastra-kafka acls`: the Kafka ACLs a role needs, as `kafka-acls.sh` lines, JSON or the
README's table; `--apply` creates them with the admin API."""

from __future__ import annotations

import json

import typer

from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_UNAVAILABLE,
    catalogue_of,
    fail,
    settings_of,
)

__all__ = ["register"]


def acls(
    ctx: typer.Context,
    role: list[str] = typer.Option(
        [],
        "--role",
        "-r",
        help="poller, worker, webhook, hooks, lag, topics-apply, "
        "privacy-erase or dlq-replay (repeatable; default: all).",
    ),
    principal: str | None = typer.Option(
        None, "--principal", "-p", help="Who gets them, e.g. User:poller (needed by --apply)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    markdown: bool = typer.Option(False, "--markdown", help="The README's table of every role."),
    apply: bool = typer.Option(
        False, "--apply", help="Create them on the cluster (KAFKA_* must be an admin's)."
    ),
) -> None:
    """Print the ACLs each role needs (least privilege), or create them with --apply.

    Names carry KAFKA_TOPIC_PREFIX. Exit codes: 0 ok; 2 unknown role or no --principal for
    --apply; 3 Kafka refused or did not answer."""
    from dastra_kafka.acls import (
        AclRole,
        acl_bindings,
        all_role_acls,
        kafka_acls_commands,
        markdown_table,
        role_acls,
    )
    from dastra_kafka.acls import (
        as_json as rules_json,
    )

    settings = settings_of(ctx)
    catalogue = catalogue_of(settings)
    if markdown:
        typer.echo(markdown_table(all_role_acls(settings, catalogue)))
        return
    try:
        roles = [AclRole(name) for name in role] or list(AclRole)
    except ValueError:
        fail(
            f"unknown role in {role}; known: {', '.join(r.value for r in AclRole)}", EXIT_BAD_INPUT
        )
    if apply and principal is None:
        fail("--apply needs --principal (e.g. User:poller)", EXIT_BAD_INPUT)
    who = principal or "User:<principal>"
    wanted = {r: role_acls(r, settings, catalogue) for r in roles}
    if as_json:
        typer.echo(json.dumps({r.value: rules_json(rules) for r, rules in wanted.items()}))
    else:
        for r, rules in wanted.items():
            typer.echo(f"# {r.value}")
            for line in kafka_acls_commands(rules, who, settings.kafka.bootstrap_servers):
                typer.echo(line)
    if apply:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(settings.kafka.confluent_config())
        bindings = [b for rules in wanted.values() for b in acl_bindings(rules, who)]
        try:
            for future in admin.create_acls(bindings, request_timeout=30).values():
                future.result(timeout=60)
        except KafkaException as exc:
            fail(f"could not create the ACLs: {exc.args[0].str()}", EXIT_UNAVAILABLE)
        typer.echo(f"created {len(bindings)} ACL(s) for {who}", err=True)


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("acls")(acls)
