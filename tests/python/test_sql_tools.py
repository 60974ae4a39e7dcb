"""Npgsql's type loading and the start-up and browsing queries of DBeaver and DataGrip, governed, on both backends.

These programs cannot run here (no .NET/NuGet; DBeaver and DataGrip are desktop applications), so their queries are
**replayed**: the exact SQL each one sends, taken from its source or from captures other PostgreSQL-compatible
projects recorded, sent the way the program sends it.

- Npgsql (.NET): on opening a data source it sends `SELECT version()` and its type-loading queries as one batch in a
  simple Query message, and reads four results. Replayed with psycopg, which sends a statement without parameters
  as a simple Query too (several results, read with `nextset()`), and once more query by query through the extended
  protocol (prepared), the route Npgsql's own commands take.
  Source: github.com/npgsql/npgsql, src/Npgsql/PostgresDatabaseInfo.cs (`GenerateLoadTypesQuery`,
  `GenerateLoadCompositeTypesQuery`, `GenerateLoadEnumFieldsQuery`, `LoadBackendTypes`), commit 3cb5804b; the
  gateway reports server_version 16.6, so ranges, multiranges, enums and `typcategory` are all on.
- DBeaver: a pgJDBC client; each query runs as a prepared statement, parameters bound as DBeaver binds them.
  Sources: github.com/dbeaver/dbeaver, plugins/org.jkiss.dbeaver.ext.postgresql/src/org/jkiss/dbeaver/ext/
  postgresql/model/ (file and line at each query), commit 2428359b; and the start-up DBeaver 25.1.5 sent as
  captured in github.com/datafusion-contrib/datafusion-postgres, datafusion-postgres/tests/dbeaver.rs.
- DataGrip (closed source): a pgJDBC client; its start-up as DataGrip 2025.2.3 sent it, captured in
  github.com/datafusion-contrib/datafusion-postgres, datafusion-postgres/tests/datagrip.rs (from the server log in
  https://github.com/datafusion-contrib/datafusion-postgres/issues/165), and its schema listing as quoted in
  https://github.com/yugabyte/yugabyte-db/issues/3168 (and https://github.com/risingwavelabs/risingwave/issues/14224,
  https://github.com/dolthub/doltgresql/issues/791). Its browsing (introspection: the tables and the columns of a
  schema) as JetBrains' PostgreSQL introspector sent it (the database plugin DataGrip and IntelliJ IDEA share),
  captured from IntelliJ IDEA 2025.1.1.1 in github.com/polygon-io/pg_catalog, captures/intellij.yaml, commit
  efe8fc6a (the same texts, with their int8 parameters, in agents-dev/intellij-compat-tasks.md there).

Users as in test_sql_catalog.py: alice (analyst), carol (hr), dave (nothing). Every output is checked with
`assert_nothing_hidden`.
"""

import re
import subprocess

import psycopg
import pytest

from sql_support import (JDBC_JAR, USERS, VISIBLE, assert_nothing_hidden, gw, jdbc_classes,  # noqa: F401
                         token, visible_schemas, visible_tables)

# ---------------------------------------------------------------- Npgsql

NPGSQL_BUILTIN_SCHEMAS = "'pg_catalog', 'information_schema', 'pg_toast'"


def npgsql_load_types_query(load_table_composites=False, schemas=None):
    """`GenerateLoadTypesQuery(withRange: true, withMultirange: true, loadTableComposites, schemaListSqlFragment,
    hasTypeCategory: true)` as Npgsql builds it for a 16.x server."""
    schema_list = None if schemas is None else NPGSQL_BUILTIN_SCHEMAS + "".join(f", '{s}'" for s in schemas)
    composites = (f"ns.nspname NOT IN ({NPGSQL_BUILTIN_SCHEMAS})" if load_table_composites else "relkind='c'")
    elem_composites = (f"ns.nspname NOT IN ({NPGSQL_BUILTIN_SCHEMAS})" if load_table_composites else "elemrelkind='c'")
    schema_filter = f"(ns.nspname IN ({schema_list}) OR typcategory = 'U') AND " if schema_list is not None else ""
    return f"""
SELECT ns.nspname, t.oid, t.typname, t.typtype, t.typnotnull, t.elemtypoid
FROM (
    -- Arrays have typtype=b - this subquery identifies them by their typreceive and converts their typtype to a
    -- We first do this for the type (innerest-most subquery), and then for its element type
    -- This also returns the array element, range subtype and domain base type as elemtypoid
    SELECT
        typ.oid, typ.typnamespace, typ.typname, typ.typtype, typ.typrelid, typ.typnotnull, typ.relkind,
        elemtyp.oid AS elemtypoid, elemtyp.typname AS elemtypname, elemcls.relkind AS elemrelkind,
        CASE WHEN elemproc.proname='array_recv' THEN 'a' ELSE elemtyp.typtype END AS elemtyptype
        , typ.typcategory
    FROM (
        SELECT typ.oid, typnamespace, typname, typrelid, typnotnull, relkind, typelem AS elemoid,
            CASE WHEN proc.proname='array_recv' THEN 'a' ELSE typ.typtype END AS typtype,
            CASE
                WHEN proc.proname='array_recv' THEN typ.typelem
                WHEN typ.typtype='r' THEN rngsubtype
                WHEN typ.typtype='m' THEN (SELECT rngtypid FROM pg_range WHERE rngmultitypid = typ.oid)
                WHEN typ.typtype='d' THEN typ.typbasetype
            END AS elemtypoid
            , typ.typcategory
        FROM pg_type AS typ
        LEFT JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
        LEFT JOIN pg_proc AS proc ON proc.oid = typ.typreceive
        LEFT JOIN pg_range ON (pg_range.rngtypid = typ.oid)
    ) AS typ
    LEFT JOIN pg_type AS elemtyp ON elemtyp.oid = elemtypoid
    LEFT JOIN pg_class AS elemcls ON (elemcls.oid = elemtyp.typrelid)
    LEFT JOIN pg_proc AS elemproc ON elemproc.oid = elemtyp.typreceive
) AS t
JOIN pg_namespace AS ns ON (ns.oid = typnamespace)
WHERE
    {schema_filter}(typtype IN ('b', 'r', 'm', 'e', 'd') OR -- Base, range, multirange, enum, domain
    (typtype = 'c' AND {composites}) OR -- User-defined free-standing composites (not table composites) by default
    (typtype = 'p' AND typname IN ('record', 'void', 'unknown')) OR -- Some special supported pseudo-types
    (typtype = 'a' AND (  -- Array of...
        elemtyptype IN ('b', 'r', 'm', 'e', 'd') OR -- Array of base, range, multirange, enum, domain
        (elemtyptype = 'p' AND elemtypname IN ('record', 'void')) OR -- Arrays of special supported pseudo-types
        (elemtyptype = 'c' AND {elem_composites}) -- Array of user-defined free-standing composites (not table composites) by default
    )))
ORDER BY CASE
       WHEN typtype IN ('b', 'e', 'p') THEN 0           -- First base types, enums, pseudo-types
       WHEN typtype = 'c' THEN 1                        -- Composites after (fields loaded later in 2nd pass)
       WHEN typtype = 'r' THEN 2                        -- Ranges after
       WHEN typtype = 'm' THEN 3                        -- Multiranges after
       WHEN typtype = 'd' AND elemtyptype <> 'a' THEN 4 -- Domains over non-arrays after
       WHEN typtype = 'a' THEN 5                        -- Arrays after
       WHEN typtype = 'd' AND elemtyptype = 'a' THEN 6  -- Domains over arrays last
END;"""


def npgsql_load_composite_types_query(load_table_composites=False, schemas=None):
    """`GenerateLoadCompositeTypesQuery(loadTableComposites, schemaListSqlFragment)`."""
    schema_list = None if schemas is None else NPGSQL_BUILTIN_SCHEMAS + "".join(f", '{s}'" for s in schemas)
    composites = (f"ns.nspname NOT IN ({NPGSQL_BUILTIN_SCHEMAS})" if load_table_composites else "cls.relkind='c'")
    schema_filter = f"(ns.nspname IN ({schema_list})) AND " if schema_list is not None else ""
    return f"""
-- Load field definitions for (free-standing) composite types
SELECT typ.oid, att.attname, att.atttypid
FROM pg_type AS typ
JOIN pg_namespace AS ns ON (ns.oid = typ.typnamespace)
JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
JOIN pg_attribute AS att ON (att.attrelid = typ.typrelid)
WHERE
  (typ.typtype = 'c' AND {composites}) AND
  {schema_filter}attnum > 0 AND     -- Don't load system attributes
  NOT attisdropped
ORDER BY typ.oid, att.attnum;"""


def npgsql_load_enum_fields_query(schemas=None):
    """`GenerateLoadEnumFieldsQuery(withEnumSortOrder: true, schemaListSqlFragment)`."""
    schema_list = None if schemas is None else NPGSQL_BUILTIN_SCHEMAS + "".join(f", '{s}'" for s in schemas)
    schema_filter = f"WHERE (ns.nspname IN ({schema_list}))" if schema_list is not None else ""
    return f"""
-- Load enum fields
SELECT typ.oid, enumlabel
FROM pg_enum
JOIN pg_type AS typ ON typ.oid = enumtypid
JOIN pg_namespace AS ns ON ns.oid = typ.typnamespace
{schema_filter}
ORDER BY oid, enumsortorder;"""


# The two variants of the type loading a 16.x server gets: Npgsql's defaults, and a data source built with
# `EnableTableCompositesLoading()` and `SetTypeLoadingSchemas("sales", "hr")`.
NPGSQL_VARIANTS = {
    "default": dict(load_table_composites=False, schemas=None),
    "table-composites-and-schemas": dict(load_table_composites=True, schemas=("sales", "hr")),
}


def npgsql_queries(variant):
    options = NPGSQL_VARIANTS[variant]
    return ["SELECT version();", npgsql_load_types_query(**options),
            npgsql_load_composite_types_query(**options), npgsql_load_enum_fields_query(options["schemas"])]


def npgsql_batch(variant):
    """The text of the one Query message: each statement on a line of its own (`StringBuilder.AppendLine`)."""
    return "".join(q + "\n" for q in npgsql_queries(variant))


# The base types of the catalog the gateway carries, with PostgreSQL's OIDs: Npgsql maps results by these.
BASE_TYPES = {"bool": 16, "int8": 20, "int2": 21, "int4": 23, "text": 25, "float4": 700, "float8": 701,
              "varchar": 1043, "date": 1082, "timestamp": 1114, "numeric": 1700}


def connect(gw, user):
    return psycopg.connect(host="127.0.0.1", port=gw.sql_port, dbname="lakegate", user=user,
                           password=token(gw, user), sslmode="disable", connect_timeout=10)


def batch_results(cur):
    """Every result of a multi-statement simple query, as lists of rows."""
    results = [cur.fetchall()]
    while cur.nextset():
        results.append(cur.fetchall())
    return results


def assert_npgsql_types(types):
    """Npgsql's reading of the types result: (nspname, oid, typname, typtype, typnotnull, elemtypoid), all text."""
    by_name = {typname: (nspname, int(oid), typtype) for nspname, oid, typname, typtype, _notnull, _elem in types}
    for name, oid in BASE_TYPES.items():
        assert by_name.get(name) == ("pg_catalog", oid, "b"), (name, by_name.get(name))
    # Npgsql parses the oid as an unsigned integer and the first character of typtype and typnotnull.
    for nspname, oid, typname, typtype, notnull, _elem in types:
        assert int(oid) > 0 and len(typtype) == 1 and notnull in (True, False), (typname, typtype, notnull)


@pytest.mark.parametrize("variant", sorted(NPGSQL_VARIANTS))
@pytest.mark.parametrize("user", USERS)
def test_npgsql_type_loading_batch_gets_the_base_types_with_their_oids(gw, user, variant):
    with connect(gw, user) as conn, conn.cursor() as cur:
        cur.execute(npgsql_batch(variant))
        results = batch_results(cur)
    assert len(results) == 4, results
    (version,), = results[0]
    assert version.startswith("PostgreSQL 16.")
    assert_npgsql_types(results[1])
    # No composite types of tables (their fields would be columns) and no enums: Lakegate's catalog has none.
    assert results[2] == [] and results[3] == []
    assert_nothing_hidden(user, repr(results))


@pytest.mark.parametrize("variant", sorted(NPGSQL_VARIANTS))
@pytest.mark.parametrize("user", USERS)
def test_npgsql_type_loading_queries_answer_through_the_extended_protocol(gw, user, variant):
    with connect(gw, user) as conn, conn.cursor() as cur:
        results = []
        for query in npgsql_queries(variant):
            cur.execute(query, prepare=True)
            results.append(cur.fetchall())
    assert_npgsql_types(results[1])
    assert results[2] == [] and results[3] == []
    assert_nothing_hidden(user, repr(results))


# ---------------------------------------------------------------- DBeaver and DataGrip through pgJDBC

DBEAVER_SRC = "dbeaver/dbeaver plugins/org.jkiss.dbeaver.ext.postgresql/.../model"

# (label, SQL, parameters) in the order DBeaver sends them on connect. Parameters name what DBeaver binds.
DBEAVER_STARTUP = [
    # PostgreDataSource.java:441 (initialize)
    ("version", "SELECT version()", []),
    # PostgreDatabase.java:187 (the connection's database)
    ("database", "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname=?", [("string", "lakegate")]),
    # PostgreExecutionContext.java:170, :186 (refreshDefaults)
    ("context", "SELECT current_schema(),session_user", []),
    ("search_path", "SHOW search_path", []),
    # PostgreDatabase.java:1332 (SchemaCache, no filters)
    ("schemas", "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n\n"
                "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND "
                "d.classoid='pg_namespace'::regclass\n ORDER BY nspname", []),
    # PostgreDataSource.java:777 (SettingCache, preloading standard_conforming_strings)
    ("setting", "select * from pg_catalog.pg_settings where name=?", [("string", "standard_conforming_strings")]),
    # PostgreUtils.java:899 via PostgreDataSource.java:450, :456 (isMetaObjectExists)
    ("enum_probe", "SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1", []),
    ("reltype_probe", "SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1", []),
    # PostgreDataTypeCache.java:185 (the types of pg_catalog, oid 11)
    ("types", "SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, "
              "d.description\nFROM pg_catalog.pg_type t\nLEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem "
              "\nLEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid\nLEFT OUTER JOIN pg_catalog.pg_description "
              "d ON t.oid=d.objoid\nWHERE t.typname IS NOT NULL\nAND (c.relkind IS NULL OR c.relkind = 'c') AND "
              "(et.typcategory IS NULL OR et.typcategory <> 'C')\nAND t.typnamespace=? ", [("long", 11)]),
    # PostgreDatabase.java:1076 (RoleCache)
    ("roles", "SELECT a.oid,a.*,pd.description FROM pg_catalog.pg_roles a \nleft join pg_catalog.pg_shdescription pd "
              "on a.oid = pd.objoid\nORDER BY a.rolname", []),
    # datafusion-postgres/tests/dbeaver.rs: the same type read with literals, as DBeaver 25.1.5 sent it
    ("types_literal", "SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as "
                      "base_type_name, d.description FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_type et "
                      "ON et.oid=t.typelem LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid LEFT OUTER JOIN "
                      "pg_catalog.pg_description d ON t.oid=d.objoid WHERE t.typname IS NOT NULL AND (c.relkind IS "
                      "NULL OR c.relkind = 'c') AND (et.typcategory IS NULL OR et.typcategory <> 'C')", []),
]


def dbeaver_browse_schema(schema_oid):
    """What DBeaver sends when a schema is opened in its navigator (PostgreSchema.java)."""
    return [
        # PostgreSchema.java:844 (TableCache; server >= 10 adds the partition columns)
        ("tables", "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr,  "
                   "pg_catalog.pg_get_partkeydef(c.oid) as partition_key \nFROM pg_catalog.pg_class c\n"
                   "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND "
                   "d.classoid='pg_class'::regclass\nWHERE c.relnamespace=? AND c.relkind not in ('i','I','c')",
         [("long", schema_oid)]),
        # PostgreSchema.java:666 (collectObjectStatistics)
        ("statistics", "select c.oid,pg_catalog.pg_total_relation_size(c.oid) as total_rel_size,"
                       "pg_catalog.pg_relation_size(c.oid) as rel_size\nFROM pg_class c\nWHERE c.relnamespace=?",
         [("long", schema_oid)]),
        # PostgreSchema.java:444 (inheritance of the schema's tables)
        ("inherits", "SELECT i.inhrelid relid, pc.relnamespace parent_ns, pc.oid parent_oid, i.inhseqno\n"
                     "FROM pg_catalog.pg_inherits i, pg_class rc, pg_class pc\n"
                     "WHERE rc.oid=i.inhrelid AND rc.relnamespace=? AND pc.oid=i.inhparent", [("long", schema_oid)]),
    ]


def dbeaver_browse_table(table_oid):
    """What DBeaver sends when a table is opened: columns, constraints, indexes (PostgreSchema.java)."""
    return [
        # PostgreSchema.java:881 (TableCache.prepareChildrenStatement for one table; sequences supported)
        ("columns", "SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,"
                    "dsc.description,dep.objid\nFROM pg_catalog.pg_attribute a\nINNER JOIN pg_catalog.pg_class c ON "
                    "(a.attrelid=c.oid)\nLEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND "
                    "a.attnum = ad.adnum)\nLEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND "
                    "a.attnum = dsc.objsubid)\nLEFT OUTER JOIN pg_depend dep on dep.refobjid = a.attrelid AND "
                    "dep.deptype = 'i' and dep.refobjsubid = a.attnum and dep.classid = dep.refclassid\n"
                    "WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.oid=?\nORDER BY a.attnum",
         [("long", table_oid)]),
        # PostgreSchema.java:931 (ConstraintCache for one table)
        ("constraints", "SELECT c.oid,c.*,t.relname as tabrelname,rt.relnamespace as refnamespace,d.description, "
                        "case when c.contype='c' then \"substring\"(pg_get_constraintdef(c.oid), 7) else null end "
                        "consrc_copy\nFROM pg_catalog.pg_constraint c\nINNER JOIN pg_catalog.pg_class t ON "
                        "t.oid=c.conrelid\nLEFT OUTER JOIN pg_catalog.pg_class rt ON rt.oid=c.confrelid\n"
                        "LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND "
                        "d.classoid='pg_constraint'::regclass\nWHERE c.conrelid=?\nORDER BY c.oid",
         [("long", table_oid)]),
        # PostgreSchema.java:1087 (IndexCache for one table)
        ("indexes", "SELECT i.*,i.indkey as keys,c.relname,c.relnamespace,c.relam,c.reltablespace,"
                    "tc.relname as tabrelname,dsc.description,pg_catalog.pg_get_expr(i.indpred, i.indrelid) as "
                    "pred_expr,pg_catalog.pg_get_expr(i.indexprs, i.indrelid, true) as expr,"
                    "pg_catalog.pg_relation_size(i.indexrelid) as index_rel_size,"
                    "pg_catalog.pg_stat_get_numscans(i.indexrelid) as index_num_scans\nFROM pg_catalog.pg_index i"
                    "\nINNER JOIN pg_catalog.pg_class c ON c.oid=i.indexrelid\nINNER JOIN pg_catalog.pg_class tc ON "
                    "tc.oid=i.indrelid\nLEFT OUTER JOIN pg_catalog.pg_description dsc ON i.indexrelid=dsc.objoid\n"
                    "WHERE  i.indrelid=? ORDER BY c.relname", [("long", table_oid)]),
    ]


# DataGrip 2025.2.3's start-up, verbatim from datafusion-postgres/tests/datagrip.rs (issue #165's server log).
DATAGRIP_STARTUP = [
    ("version", "select version()", []),
    ("context", "select current_database() as a, current_schemas(false) as b", []),
    ("isolation", "SHOW TRANSACTION ISOLATION LEVEL", []),
    ("defaults", "select current_database(), current_schema(), current_user", []),
    ("databases", "select N.oid::bigint as id,\n               datname as name,\n               D.description,\n"
                  "               datistemplate as is_template,\n               datallowconn as allow_connections,\n"
                  "               pg_catalog.pg_get_userbyid(N.datdba) as \"owner\"\n"
                  "        from pg_catalog.pg_database N\n"
                  "          left join pg_catalog.pg_shdescription D on N.oid = D.objoid\n"
                  "        order by case when datname = pg_catalog.current_database() then -1::bigint else "
                  "N.oid::bigint end", []),
    ("schemas", "select N.oid::bigint as id,\n               N.xmin as state_number,\n               nspname as name,\n"
                "               D.description,\n               pg_catalog.pg_get_userbyid(N.nspowner) as \"owner\"\n"
                "        from pg_catalog.pg_namespace N\n"
                "          left join pg_catalog.pg_description D on N.oid = D.objoid\n"
                "        order by case when nspname = pg_catalog.current_schema() then -1::bigint else "
                "N.oid::bigint end", []),
    ("datestyle", "show DateStyle", []),
    ("roles", "select R.oid::bigint as role_id, rolname as role_name,\n          rolsuper is_super, rolinherit "
              "is_inherit,\n          rolcreaterole can_createrole, rolcreatedb can_createdb,\n          rolcanlogin "
              "can_login, rolreplication /* false */ is_replication,\n          rolconnlimit conn_limit, rolvaliduntil "
              "valid_until,\n          rolbypassrls /* false */ bypass_rls, rolconfig config,\n          "
              "D.description\n        from pg_catalog.pg_roles R\n          left join pg_catalog.pg_shdescription D "
              "on D.objoid = R.oid", []),
    ("role_members", "select member id, roleid role_id, admin_option\n                  from "
                     "pg_catalog.pg_auth_members order by id, roleid::text", []),
    ("tablespaces", "select T.oid::bigint as id, T.spcname as name,\n               T.xmin as state_number, "
                    "pg_catalog.pg_get_userbyid(T.spcowner) as owner,\n               "
                    "pg_catalog.pg_tablespace_location(T.oid) /* null */ as location,\n               "
                    "T.spcoptions /* null */ as options,\n               D.description as comment\n        "
                    "from pg_catalog.pg_tablespace T\n          left join pg_catalog.pg_shdescription D on "
                    "D.objoid = T.oid\n        --  where pg_catalog.age(T.xmin) <= #TXAGE", []),
    ("acls", "select T.oid as object_id,\n                         T.spcacl as acl\n                  from "
             "pg_catalog.pg_tablespace T\n                  union all\n                  select T.oid as object_id,\n"
             "                         T.datacl as acl\n                  from pg_catalog.pg_database T", []),
    # The type lookups pgJDBC makes for DataGrip (the type of xmin, 28, and aclitem[], 1034).
    ("type_28", "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid   FROM "
                "pg_catalog.pg_type   LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r           from pg_namespace "
                "as ns           join ( select s.r, (current_schemas(false))[s.r] as nspname                    from "
                "generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r          using ( nspname )"
                "        ) as sp     ON sp.nspoid = typnamespace  WHERE pg_type.oid = '28'  ORDER BY sp.r, "
                "pg_type.oid DESC", []),
    ("typdelim_1034", "SELECT e.typdelim FROM pg_catalog.pg_type t, pg_catalog.pg_type e WHERE t.oid = '1034' and "
                      "t.typelem = e.oid", []),
]

# What DataGrip sends that reads the server's own state, which the gateway does not emulate: each must be a clear
# error (SQLSTATE) the tool reports and gets past, never an answer from the backend's real catalog.
# (label, SQL, SQLSTATE), verbatim from datafusion-postgres/tests/datagrip.rs.
DATAGRIP_REFUSED = [
    ("startup_time", "select round(extract(epoch from pg_postmaster_start_time() at time zone 'UTC')) as "
                     "startup_time", "42501"),
    ("oldest_transaction", "select L.transactionid::varchar::bigint as transaction_id\n        from "
                           "pg_catalog.pg_locks L\n        where L.transactionid is not null\n        order by "
                           "pg_catalog.age(L.transactionid) desc\n        limit 1", "42P01"),
    ("current_txid", "select case\n          when pg_catalog.pg_is_in_recovery()\n            then null\n"
                     "          else\n            (pg_catalog.txid_current() % 4294967296)::varchar::bigint\n"
                     "          end as current_txid", "0A000"),
    ("timezones", "select name, is_dst from pg_catalog.pg_timezone_names\n        union distinct\n        select "
                  "abbrev as name, is_dst from pg_catalog.pg_timezone_abbrevs", "42P01"),
]


# DataGrip's browsing of one schema, verbatim from github.com/polygon-io/pg_catalog, captures/intellij.yaml
# (commit efe8fc6a): the oids of the schema's table-like relations, the tables (`T.xmin as table_state_number`) and
# their columns (`C.xmin as column_state_number`, `format_type`, `attnotnull`, defaults). $1 is the schema's oid,
# the others the transaction age DataGrip last saw (0 on a first introspection), all bound as int8. The capture is
# what the server received, where pgJDBC has numbered DataGrip's `?` placeholders `$1`, `$2`...: replayed through
# pgJDBC with `?` in their place, the server receives the captured text.
DATAGRIP_BROWSE = [
    ("table_oids", "select oid from pg_catalog.pg_class C\nwhere relkind in ('r', 'm', 'v', 'p', 'f')\n"
                   "  and relnamespace = $1::oid", 1),
    ("tables", "select T.relkind as table_kind,\n       T.relname as table_name,\n       T.oid as table_id,\n"
               "       T.xmin as table_state_number,\n       false /* T.relhasoids */ as table_with_oids,\n"
               "       T.reltablespace as tablespace_id,\n       T.reloptions as options,\n"
               "       T.relpersistence as persistence,\n"
               "       (select pg_catalog.array_agg(inhparent::bigint order by inhseqno)::varchar from "
               "pg_catalog.pg_inherits where T.oid = inhrelid) as ancestors,\n"
               "       (select pg_catalog.array_agg(inhrelid::bigint order by inhrelid)::varchar from "
               "pg_catalog.pg_inherits where T.oid = inhparent) as successors,\n"
               "       T.relispartition /* false */ as is_partition,\n"
               "       pg_catalog.pg_get_partkeydef(T.oid) /* null */ as partition_key,\n"
               "       pg_catalog.pg_get_expr(T.relpartbound, T.oid) /* null */ as partition_expression,\n"
               "       T.relam am_id,\n       pg_catalog.pg_get_userbyid(T.relowner) as \"owner\"\n"
               "from pg_catalog.pg_class T\nwhere relnamespace = $1::oid\n"
               "       and relkind in ('r', 'm', 'v', 'f', 'p')\n"
               "and pg_catalog.age(T.xmin) <= coalesce(nullif(greatest(pg_catalog.age($2::varchar::xid), -1), -1), "
               "2147483647)\n--  and T.relname in ( :[*f_names] )\norder by table_kind, table_id", 2),
    ("columns", "with T as ( select distinct\n                  T.oid as table_id, T.relname as table_name\n"
                "            from pg_catalog.pg_class T\n                 , pg_catalog.pg_attribute A\n"
                "            where T.relnamespace = $1::oid\n"
                "              and T.relkind in ('r', 'm', 'v', 'f', 'p')\n"
                "              and (pg_catalog.age(A.xmin) <= coalesce(nullif(greatest(pg_catalog.age("
                "$2::varchar::xid), -1), -1), 2147483647) or pg_catalog.age(T.xmin) <= coalesce(nullif(greatest("
                "pg_catalog.age($3::varchar::xid), -1), -1), 2147483647))\n"
                "              and A.attrelid = T.oid\n             --  and T.relname in ( :[*f_names] )\n"
                "            )\nselect T.table_id,\n       C.attnum as column_position,\n"
                "       C.attname as column_name,\n       C.xmin as column_state_number,\n"
                "       C.atttypmod as type_mod,\n       C.attndims as dimensions_number,\n"
                "       pg_catalog.format_type(C.atttypid, C.atttypmod) as type_spec,\n"
                "       C.atttypid as type_id,\n       C.attnotnull as mandatory,\n"
                "       pg_catalog.pg_get_expr(D.adbin, T.table_id) /* D.adsrc */ as column_default_expression,\n"
                "       not C.attislocal as column_is_inherited,\n       C.attfdwoptions as options,\n"
                "       C.attisdropped as column_is_dropped,\n       C.attidentity /* null */ as identity_kind,\n"
                "       C.attgenerated /* null */ as generated\nfrom T\n"
                "  join pg_catalog.pg_attribute C on T.table_id = C.attrelid\n"
                "  left join pg_catalog.pg_attrdef D on (C.attrelid, C.attnum) = (D.adrelid, D.adnum)\n"
                "where attnum > 0\norder by table_id, attnum", 3),
]


def datagrip_browse_schema(schema_oid):
    """DataGrip's browsing of the schema with oid `schema_oid`, as (label, SQL, parameters) steps."""
    return [(label, re.sub(r"\$[1-9]", "?", sql), [("long", schema_oid)] + [("long", 0)] * (count - 1))
            for label, sql, count in DATAGRIP_BROWSE]


def run_script(gw, classes, user, steps, tmp_path):
    """Replays `steps` on one pgJDBC connection: {label: {"cols": [...], "rows": [[...]], "failed": (state, msg)}}."""
    script = tmp_path / f"{user}.sql"
    lines = []
    for label, sql, params in steps:
        lines.append(f"-- name: {label}")
        lines += [f"-- param: {kind} {value}" for kind, value in params]
        lines.append(sql)
    script.write_text("\n".join(lines) + "\n")
    cmd = ["java", "-cp", f"{JDBC_JAR}:{classes}", "LakegateJdbc",
           f"jdbc:postgresql://127.0.0.1:{gw.sql_port}/lakegate", user, token(gw, user), "script", str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_nothing_hidden(user, r.stdout)
    out = {}
    for line in r.stdout.splitlines():
        kind, label, *fields = line.split("\t")
        entry = out.setdefault(label, {"cols": [], "rows": [], "failed": None})
        if kind == "COLS":
            entry["cols"] = fields
        elif kind == "ROW":
            entry["rows"].append(dict(zip(entry["cols"], fields)))
        elif kind == "FAILED":
            entry["failed"] = tuple(fields)
    return out


def answered(out, label):
    entry = out.get(label)
    assert entry is not None, f"{label}: no answer"
    assert entry["failed"] is None, f"{label}: {entry['failed']}"
    return entry["rows"]


def oids(gw, user):
    """The namespace and table oids the gateway shows `user` (what DBeaver reads from its own listings)."""
    with connect(gw, user) as conn:
        schemas = dict(conn.execute("select nspname, oid from pg_catalog.pg_namespace").fetchall())
        tables = {f"{s}.{t}": oid for s, t, oid in conn.execute(
            "select n.nspname, c.relname, c.oid from pg_catalog.pg_class c "
            "join pg_catalog.pg_namespace n on n.oid = c.relnamespace").fetchall()}
    return schemas, tables


@pytest.mark.parametrize("user", USERS)
def test_dbeaver_startup_answers_every_query(gw, jdbc_classes, user, tmp_path):
    out = run_script(gw, jdbc_classes, user, DBEAVER_STARTUP, tmp_path)
    for label, _, _ in DBEAVER_STARTUP:
        answered(out, label)
    assert [r["datname"] for r in answered(out, "database")] == ["lakegate"]
    assert answered(out, "context") == [{"current_schema": "public", "session_user": user}]
    schemas = sorted(r["nspname"] for r in answered(out, "schemas"))
    assert sorted(set(schemas) - {"pg_catalog", "public"}) == visible_schemas(user)
    assert [r["setting"] for r in answered(out, "setting")] == ["on"]
    assert [r["rolname"] for r in answered(out, "roles")] == [user]
    types = {r["typname"]: int(r["oid"]) for r in answered(out, "types")}
    assert BASE_TYPES.items() <= types.items()
    assert answered(out, "types_literal") == answered(out, "types")


@pytest.mark.parametrize("user", USERS)
def test_dbeaver_browse_shows_exactly_the_visible_tables_and_columns(gw, jdbc_classes, user, tmp_path):
    schemas, tables = oids(gw, user)
    steps = []
    for schema in ("sales", "hr"):
        if schema in schemas:
            steps += [(f"{schema}/{label}", sql, p) for label, sql, p in dbeaver_browse_schema(schemas[schema])]
    for oid in tables.values():
        steps += [(f"{oid}/{label}", sql, p) for label, sql, p in dbeaver_browse_table(oid)]
    out = run_script(gw, jdbc_classes, user, steps, tmp_path)
    listed = []
    for schema in ("sales", "hr"):
        if schema in schemas:
            rows = answered(out, f"{schema}/tables")
            assert all(r["relkind"] == "r" for r in rows)
            listed += [f"{schema}.{r['relname']}" for r in rows]
            assert {int(r["oid"]) for r in answered(out, f"{schema}/statistics")} == \
                {int(r["oid"]) for r in rows}
            assert answered(out, f"{schema}/inherits") == []
    assert sorted(listed) == visible_tables(user)
    columns = {}
    for table, oid in tables.items():
        rows = answered(out, f"{oid}/columns")
        assert {r["relname"] for r in rows} == {table.split(".")[1]}
        columns[table] = [r["attname"] for r in rows]
        assert [int(r["attnum"]) for r in rows] == list(range(1, len(rows) + 1))
        assert answered(out, f"{oid}/constraints") == [] and answered(out, f"{oid}/indexes") == []
    assert columns == VISIBLE[user]


@pytest.mark.parametrize("user", ["carol", "dave"])
def test_dbeaver_cannot_browse_a_schema_or_table_it_may_not_see(gw, jdbc_classes, user, tmp_path):
    # The oids alice's listing shows (labels name oids, not tables: the output is checked for hidden names).
    all_schemas, all_tables = oids(gw, "alice")
    hidden = {t: oid for t, oid in all_tables.items() if t not in VISIBLE[user]}
    steps = []
    for table, oid in hidden.items():
        steps += [(f"{oid}/{label}", sql, p) for label, sql, p in dbeaver_browse_table(oid)]
        schema_oid = all_schemas[table.split(".")[0]]
        steps += [(f"{oid}/{label}", sql, p) for label, sql, p in dbeaver_browse_schema(schema_oid)]
    out = run_script(gw, jdbc_classes, user, steps, tmp_path)
    for oid in hidden.values():
        assert answered(out, f"{oid}/columns") == []
        # A schema oid of alice's may be another schema of this user's: only visible tables can be listed.
        schemas = {s: o for s, o in oids(gw, user)[0].items()}
        listed = [r["relname"] for r in answered(out, f"{oid}/tables")]
        assert all(any(f"{s}.{t}" in VISIBLE[user] for s in schemas) for t in listed)


@pytest.mark.parametrize("user", USERS)
def test_datagrip_startup_answers_its_catalog_queries(gw, jdbc_classes, user, tmp_path):
    out = run_script(gw, jdbc_classes, user, DATAGRIP_STARTUP, tmp_path)
    for label, _, _ in DATAGRIP_STARTUP:
        answered(out, label)
    assert answered(out, "context")[0]["a"] == "lakegate"
    assert answered(out, "defaults") == [{"current_database": "lakegate", "current_schema": "public",
                                          "current_user": user}]
    assert [r["name"] for r in answered(out, "databases")] == ["lakegate"]
    schemas = [r["name"] for r in answered(out, "schemas")]
    assert schemas[0] == "public"
    assert sorted(set(schemas) - {"pg_catalog", "public"}) == visible_schemas(user)
    assert [r["role_name"] for r in answered(out, "roles")] == [user]
    assert answered(out, "role_members") == [] and answered(out, "tablespaces") == []


def test_datagrip_queries_about_the_server_state_are_refused_with_a_sqlstate(gw, jdbc_classes, tmp_path):
    out = run_script(gw, jdbc_classes, "alice", [(label, sql, []) for label, sql, _ in DATAGRIP_REFUSED], tmp_path)
    for label, _, state in DATAGRIP_REFUSED:
        failed = out[label]["failed"]
        assert failed is not None, f"{label} answered: {out[label]['rows']}"
        assert failed[0] == state, (label, failed)


def datagrip_browse(gw, classes, user, schemas, tmp_path):
    """DataGrip's browsing of each schema in `schemas` ({name: oid}) as `user`: {schema: {label: rows}}."""
    steps = []
    for schema, oid in schemas.items():
        steps += [(f"{schema}/{label}", sql, p) for label, sql, p in datagrip_browse_schema(oid)]
    out = run_script(gw, classes, user, steps, tmp_path)
    return {schema: {label: answered(out, f"{schema}/{label}") for label, _, _ in DATAGRIP_BROWSE}
            for schema in schemas}


@pytest.mark.parametrize("user", USERS)
def test_datagrip_browse_shows_exactly_the_visible_tables_and_columns(gw, jdbc_classes, user, tmp_path):
    schemas, tables = oids(gw, user)
    browsed = datagrip_browse(gw, jdbc_classes, user, schemas, tmp_path)
    listed, columns = [], {}
    for schema, out in browsed.items():
        rows = out["tables"]
        assert all(r["table_kind"] == "r" and r["is_partition"] == "f" for r in rows), rows
        names = {int(r["table_id"]): f"{schema}.{r['table_name']}" for r in rows}
        assert all(tables[name] == oid for oid, name in names.items())
        listed += names.values()
        assert sorted(int(r["oid"]) for r in out["table_oids"]) == sorted(names)
        for r in out["columns"]:
            columns.setdefault(names[int(r["table_id"])], []).append(r)
    assert sorted(listed) == visible_tables(user)
    assert {t: [r["column_name"] for r in rows] for t, rows in columns.items()} == VISIBLE[user]
    for rows in columns.values():
        assert [int(r["column_position"]) for r in rows] == list(range(1, len(rows) + 1))
        assert all(r["type_spec"] and int(r["type_id"]) > 0 and r["column_is_dropped"] == "f" for r in rows), rows
    if "hr.employees" in columns:
        by_name = {r["column_name"]: r for r in columns["hr.employees"]}
        assert by_name["id"]["type_spec"] == "bigint" and int(by_name["id"]["type_id"]) == 20


@pytest.mark.parametrize("user", ["carol", "dave"])
def test_datagrip_cannot_browse_a_schema_it_may_not_see(gw, jdbc_classes, user, tmp_path):
    # Every schema oid alice's listing shows: one this user may not see lists nothing, one it may lists only the
    # tables and columns it may see (labels name oids, not schemas: the output is checked for hidden names).
    all_schemas, _ = oids(gw, "alice")
    browsed = datagrip_browse(gw, jdbc_classes, user, {str(oid): oid for oid in all_schemas.values()}, tmp_path)
    mine = {oid: schema for schema, oid in oids(gw, user)[0].items()}
    for oid, out in browsed.items():
        schema = mine.get(int(oid))
        for label in ("table_oids", "tables", "columns"):
            if schema is None:
                assert out[label] == [], (oid, label, out[label])
        assert all(f"{schema}.{r['table_name']}" in VISIBLE[user] for r in out["tables"])
