//! Rebuild tables on PostgreSQL: copies in schema `tacho_rebuild`, moved to `public` by the swap.

use sqlx::PgConnection;

/// Empty copies of `tables` in `tacho_rebuild`, first on this connection's `search_path`.
pub async fn fresh_tables(c: &mut PgConnection, tables: &[&str]) -> Result<(), sqlx::Error> {
    for table in tables {
        sqlx::query(&format!("DROP TABLE IF EXISTS tacho_rebuild.{table}")).execute(&mut *c).await?;
        sqlx::query(&format!("CREATE TABLE tacho_rebuild.{table} (LIKE public.{table} INCLUDING ALL)"))
            .execute(&mut *c)
            .await?;
        // `LIKE` copies no storage parameters (a fill factor): the copy gets the live table's.
        let options: Option<Vec<String>> =
            sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = to_regclass('public.' || $1)")
                .bind(table)
                .fetch_optional(&mut *c)
                .await?
                .flatten();
        if let Some(options) = options.filter(|o| !o.is_empty()) {
            sqlx::query(&format!("ALTER TABLE tacho_rebuild.{table} SET ({})", options.join(", ")))
                .execute(&mut *c)
                .await?;
        }
    }
    sqlx::query("SET search_path TO tacho_rebuild, public").execute(&mut *c).await?;
    Ok(())
}

/// Replaces the live `tables` with the copies.
pub async fn swap(c: &mut PgConnection, tables: &[&str]) -> Result<(), sqlx::Error> {
    for table in tables {
        // `LIKE ... INCLUDING ALL` names the copies' indexes itself: give them back the names
        // migrations know, matching each by its definition.
        let sql = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2";
        let old: Vec<(String, String)> = sqlx::query_as(sql).bind("public").bind(table).fetch_all(&mut *c).await?;
        let new: Vec<(String, String)> =
            sqlx::query_as(sql).bind("tacho_rebuild").bind(table).fetch_all(&mut *c).await?;
        sqlx::query(&format!("DROP TABLE public.{table}")).execute(&mut *c).await?;
        sqlx::query(&format!("ALTER TABLE tacho_rebuild.{table} SET SCHEMA public")).execute(&mut *c).await?;
        for (name, definition) in &new {
            let shape = index_shape(definition);
            let Some((wanted, _)) = old.iter().find(|(_, d)| index_shape(d) == shape) else { continue };
            if wanted != name {
                sqlx::query(&format!("ALTER INDEX public.\"{name}\" RENAME TO \"{wanted}\"")).execute(&mut *c).await?;
            }
        }
    }
    Ok(())
}

/// An index definition without its name and table: `USING btree (vin, status) WHERE ...`.
fn index_shape(definition: &str) -> &str {
    definition.find(" USING ").map_or(definition, |at| &definition[at..])
}
