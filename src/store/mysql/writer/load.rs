//! A batch's rows through LOAD DATA LOCAL INFILE, one load per table, and the ids the server gave them.

use super::*;

/// The lines of a multi-row text, without their newlines.
pub(super) fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&c| c == b'\n').filter(|l| !l.is_empty())
}

/// The rows of a batch through LOAD DATA, inside the caller's transaction.
pub(super) async fn load_batch(
    c: &mut Conn,
    batch: &[DbCdr],
    dict: &DictIds,
    columns: &str,
) -> Result<Written, LoadError> {
    // No look-up of the keys first: a CDR already stored (a replay) makes the key load skip a row, which rolls
    // the batch back to the INSERT path, where the look-up is done. Replays are rare; the look-up was a tenth of
    // the server's work besides `cdr`.
    let mut t = Vec::with_capacity(batch.iter().map(|c| c.cdr.len() + 16).sum());
    for cdr in batch {
        cdr.cdr_line(|d| dict.get(d).copied(), &mut t);
        t.push(b'\n');
    }
    let first = load(c, "cdr", columns, t, batch.len()).await?;
    let Some(ids) = own_ids(c, first, batch.len()).await? else {
        return Err(LoadError::NotClean("cdr rows not found after the load"));
    };
    let mut next = Vec::with_capacity(batch.len() * 64);
    let mut rtp = Vec::with_capacity(batch.iter().map(|c| c.rtp.len() + 64).sum());
    let mut proxy = Vec::new();
    let mut keys = Vec::with_capacity(batch.len() * 64);
    let (mut rtp_rows, mut proxy_rows) = (0, 0);
    let mut lead = Vec::with_capacity(48);
    for (&id, cdr) in ids.iter().zip(batch.iter()) {
        // Every child row starts with `cdr_ID, calldate`.
        lead.clear();
        tsv::push_uint(&mut lead, id);
        lead.push(b'\t');
        lead.extend_from_slice(cdr.calldate.as_bytes());
        lead.push(b'\t');
        next.extend_from_slice(&lead);
        tsv::escape(&mut next, cdr.fbasename.as_bytes());
        next.push(b'\n');
        for (table, rows, text) in [(&mut rtp, &mut rtp_rows, &cdr.rtp), (&mut proxy, &mut proxy_rows, &cdr.proxies)] {
            for l in lines(text) {
                table.extend_from_slice(&lead);
                table.extend_from_slice(l);
                table.push(b'\n');
                *rows += 1;
            }
        }
        keys.extend_from_slice(cdr.calldate.as_bytes());
        keys.push(b'\t');
        tsv::escape(&mut keys, &cdr.key);
        keys.push(b'\t');
        tsv::push_uint(&mut keys, id);
        keys.push(b'\n');
    }
    load(c, "cdr_next", "cdr_ID,calldate,fbasename", next, batch.len()).await?;
    load(c, "cdr_rtp", &format!("cdr_ID,calldate,{}", RTP_COLUMNS.join(",")), rtp, rtp_rows).await?;
    load(c, "cdr_proxy", "cdr_ID,calldate,dst", proxy, proxy_rows).await?;
    load(c, "voxtap_cdr_stored", "calldate,k,cdr_ID", keys, batch.len()).await?;
    let n = batch.len() as u64;
    Ok(Written { inserted: n, loaded: n, ..Default::default() })
}

/// The ids this transaction's `n` new `cdr` rows got, in row order, the first of them being `first`.
///
/// Ids are read back rather than computed: with several writers, a partitioned `cdr` can hand one statement
/// ids that interleave with another connection's (MariaDB reserves auto-increment values for a partitioned
/// table in growing intervals). The rows with an id from `first` on that this transaction sees are exactly its
/// own: under REPEATABLE READ (set at connect) rows of others are invisible unless committed before this
/// transaction's first read, and those got their ids before `first`. One statement, or several in a row,
/// number rows in order, so sorted ids are in row order.
pub(super) async fn own_ids<Q: Queryable>(q: &mut Q, first: u64, n: usize) -> Result<Option<Vec<u64>>, DbError> {
    if first == 0 {
        return Ok(None);
    }
    let ids: Vec<u64> = q.query(format!("SELECT ID FROM cdr WHERE ID >= {first} ORDER BY ID LIMIT {n}")).await?;
    Ok((ids.len() == n && ids[0] == first).then_some(ids))
}

/// One LOAD DATA LOCAL INFILE of `rows` rows; returns the first auto-increment id it gave.
pub(super) async fn load(
    c: &mut Conn,
    table: &str,
    columns: &str,
    data: Vec<u8>,
    rows: usize,
) -> Result<u64, LoadError> {
    if rows == 0 {
        return Ok(0);
    }
    let payload = bytes::Bytes::from(data);
    c.set_infile_handler(async move {
        use futures_util::StreamExt;
        Ok(futures_util::stream::once(async move { Ok(payload) }).boxed())
    });
    // CHARACTER SET binary: the bytes go into the columns as they are (text is UTF-8 already, IPv6 raw).
    let sql = format!("LOAD DATA LOCAL INFILE 'voxtap-{table}' INTO TABLE {table} CHARACTER SET binary ({columns})");
    match c.query_drop(sql).await {
        Ok(()) => {}
        // Not allowed by the server (MariaDB, MySQL) or disabled on the client side.
        Err(mysql_async::Error::Server(ref e)) if matches!(e.code, 1148 | 3948 | 2068 | 4166) => {
            return Err(LoadError::NotAllowed(mysql_async::Error::Server(e.clone())))
        }
        Err(e) => return Err(LoadError::Db(e.into())),
    }
    if c.affected_rows() != rows as u64 {
        return Err(LoadError::NotClean("rows skipped"));
    }
    if c.get_warnings() > 0 {
        return Err(LoadError::NotClean("values changed"));
    }
    if table != "cdr" {
        return Ok(0);
    }
    // The OK packet of a LOAD DATA carries no insert id; LAST_INSERT_ID() has the first one.
    let first: Option<u64> = c.query_first("SELECT LAST_INSERT_ID()").await.map_err(DbError::from)?;
    match first {
        Some(f) if f > 0 => Ok(f),
        _ => Err(LoadError::NotClean("no insert id")),
    }
}
