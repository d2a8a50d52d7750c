"""Rows in and out of PostgreSQL without the ORM's query compiler, for the hot paths where compiling a
query measured dearer than running it (order creation: docs/benchmarks.md, "Changes measured").

Model instances go in and come out, so everything around them stays ordinary Django: the SQL is built
from the models' own metadata and values are prepared as the ORM prepares them (`get_db_prep_save`,
`from_db`), so a new column needs no change here.
"""

from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import connections
from django.db.models import ForeignKey, Model
from django.db.models.expressions import Col


def select_list(model: type[Model], alias: str) -> str:
    """`alias."col", ...` for every concrete column of `model`, in `_meta.concrete_fields` order (the order
    `load` reads them back in)."""
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def load(model: type[Model], row: Sequence[Any], using: str = "default") -> Model:
    """The instance of `model` a row of `select_list(model, ...)` holds, as the ORM would have loaded it:
    the backend's and the fields' converters applied (a JSONField's text parsed, say), `from_db` marks it
    saved."""
    names, converters = _readers(model, using)
    values = list(row[: len(names)])
    connection = connections[using]
    for index, column, functions in converters:
        for convert in functions:
            values[index] = convert(values[index], column, connection)
    return model.from_db(using, names, values)


@cache
def _readers(model: type[Model], using: str) -> tuple[list[str], list[tuple[int, Col, list]]]:
    """A model's attribute names in select_list order, and the converters of the columns that have any
    (found as the ORM's compiler finds them)."""
    connection = connections[using]
    names, converters = [], []
    for index, field in enumerate(model._meta.concrete_fields):
        names.append(field.attname)
        column = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if functions:
            converters.append((index, column, functions))
    return names, converters


def select_related(
    model: type[Model], field_name: str, where: str, params: Sequence[Any], using: str = "default"
) -> list[Model]:
    """`model.objects.filter(...).select_related(field_name)` in one hand-written statement: the rows of
    `model` (aliased `m`) matching `where`, each with the row its foreign key `field_name` names (aliased
    `r`) loaded in place."""
    field = model._meta.get_field(field_name)
    related = field.related_model
    sql = (
        f"SELECT {select_list(model, 'm')}, {select_list(related, 'r')} "
        f'FROM "{model._meta.db_table}" m JOIN "{related._meta.db_table}" r '
        f'ON r."{field.target_field.column}" = m."{field.column}" WHERE {where}'
    )
    columns = len(model._meta.concrete_fields)
    instances = []
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            instance = load(model, row, using)
            setattr(instance, field_name, load(related, row[columns:], using))
            instances.append(instance)
    return instances


def insert_family(parent: Model, children: Sequence[Sequence[Model]], using: str = "default") -> None:
    """INSERT a new `parent` and new rows pointing at it in one statement, setting their primary keys.

    Each group of `children` is one model's rows, inserted in one multi-row INSERT; their foreign key to
    the parent's model is filled with the parent's new id inside the statement. One round trip and no
    query compilation, where `create` + `bulk_create` cost one each. Primary keys come back in the order
    the rows were given (ids of one INSERT ascend in VALUES order, as bulk_create also relies on). No
    signals are sent, as with bulk_create.
    """
    connection = connections[using]
    parent_model = type(parent)
    statements, params = [], []
    parent_sql, parent_params = _insert_rows([parent], connection, parent_model=None)
    statements.append(f"parent AS ({parent_sql})")
    params += parent_params
    for number, group in enumerate(children):
        if not group:
            continue
        sql, group_params = _insert_rows(group, connection, parent_model)
        statements.append(f"c{number} AS ({sql})")
        params += group_params
    pk = parent_model._meta.pk.column
    selects = [f'(SELECT "{pk}" FROM parent)']
    for number, group in enumerate(children):
        if group:
            child_pk = type(group[0])._meta.pk.column
            selects.append(f'ARRAY(SELECT "{child_pk}" FROM c{number} ORDER BY "{child_pk}")')
        else:
            selects.append("ARRAY[]::bigint[]")
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(statements)} SELECT {', '.join(selects)}", params)
        parent_id, *child_ids = cursor.fetchone()
    _saved(parent, parent_id, using)
    for group, ids in zip(children, child_ids, strict=True):
        keys = _parent_keys(type(group[0]), parent_model) if group else []
        for child, child_id in zip(group, ids, strict=True):
            for field in keys:
                setattr(child, field.attname, parent_id)
            _saved(child, child_id, using)


def _saved(instance: Model, pk: Any, using: str) -> None:
    instance.pk = pk
    instance._state.adding = False
    instance._state.db = using


def _parent_keys(model: type[Model], parent_model: type[Model]) -> list[ForeignKey]:
    return [
        field
        for field in model._meta.concrete_fields
        if isinstance(field, ForeignKey)
        and field.related_model is parent_model
        and field.target_field is parent_model._meta.pk  # what the parent's INSERT returns
    ]


def _fields(model: type[Model]) -> list:
    # The columns an INSERT names: every concrete one but an auto-generated primary key
    return [field for field in model._meta.concrete_fields if field is not model._meta.auto_field]


def _values(
    instance: Model, fields: list, connection: Any, parent_keys: list[ForeignKey]
) -> tuple[list[str], list]:
    """Placeholders and parameters of one row, prepared as the ORM's INSERT prepares them."""
    placeholders, params = [], []
    for field in fields:
        if field in parent_keys:
            placeholders.append(f'(SELECT "{field.target_field.column}" FROM parent)')
            continue
        placeholders.append("%s")
        params.append(field.get_db_prep_save(field.pre_save(instance, True), connection=connection))
    return placeholders, params


def _insert_rows(
    rows: Sequence[Model], connection: Any, parent_model: type[Model] | None
) -> tuple[str, list]:
    """A multi-row INSERT of one model's rows; a foreign key to `parent_model` reads the parent's new id."""
    model = type(rows[0])
    meta = model._meta
    parent_keys = _parent_keys(model, parent_model) if parent_model is not None else []
    fields = _fields(model)
    columns = ", ".join(f'"{field.column}"' for field in fields)
    values, params = [], []
    for row in rows:
        if type(row) is not model:
            raise TypeError(f"One group holds one model's rows: {type(row).__name__} among {model.__name__}")
        placeholders, row_params = _values(row, fields, connection, parent_keys)
        values.append(f"({', '.join(placeholders)})")
        params += row_params
    sql = f'INSERT INTO "{meta.db_table}" ({columns}) VALUES {", ".join(values)} RETURNING "{meta.pk.column}"'
    return sql, params
