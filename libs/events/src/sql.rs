//! Raw statements that run on both backends. Queries are written with PostgreSQL's `$N`
//! placeholders; SQLite gets `?N`, which binds by the same index.

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value};

pub(crate) fn stmt(conn: &impl ConnectionTrait, sql: &str, values: impl IntoIterator<Item = Value>) -> Statement {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}
