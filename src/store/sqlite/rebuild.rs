//! Rebuild tables on SQLite: TEMP copies (searched before `main`), copied back by the swap.

use sqlx::SqliteConnection;

/// Empty TEMP copies of `tables`, with their indexes.
pub async fn fresh_tables(c: &mut SqliteConnection, tables: &[&str]) -> Result<(), sqlx::Error> {
    for table in tables {
        sqlx::query(&format!("DROP TABLE IF EXISTS temp.{table}")).execute(&mut *c).await?;
        let ddl: Vec<(String, String)> = sqlx::query_as(
            "SELECT type, sql FROM sqlite_master WHERE tbl_name = $1 AND sql IS NOT NULL ORDER BY type DESC",
        )
        .bind(table)
        .fetch_all(&mut *c)
        .await?;
        // The table first ("table" sorts after "index" descending), then its indexes.
        for (kind, sql) in ddl {
            let temp = match kind.as_str() {
                "table" => sql.replacen("CREATE TABLE ", "CREATE TEMP TABLE ", 1),
                _ => sql.replacen("CREATE INDEX ", "CREATE INDEX temp.", 1).replacen(
                    "CREATE UNIQUE INDEX ",
                    "CREATE UNIQUE INDEX temp.",
                    1,
                ),
            };
            sqlx::query(&temp).execute(&mut *c).await?;
        }
    }
    Ok(())
}

/// Replaces the live `tables`' rows with the copies' (the write lock is held: readers never see
/// them half-copied).
pub async fn swap(c: &mut SqliteConnection, tables: &[&str]) -> Result<(), sqlx::Error> {
    for table in tables {
        sqlx::query(&format!("DELETE FROM main.{table}")).execute(&mut *c).await?;
        sqlx::query(&format!("INSERT INTO main.{table} SELECT * FROM temp.{table}")).execute(&mut *c).await?;
        sqlx::query(&format!("DROP TABLE temp.{table}")).execute(&mut *c).await?;
    }
    Ok(())
}
