//! Rows on disk: a read-ahead's batches written to an unnamed temporary file and read back in order (see
//! [`crate::read_ahead`]).
//!
//! The file is the process's own (`tempfile::tempfile`, removed from the directory as it is made, in `TMPDIR`):
//! nothing else can open it, and it is gone when closed, whatever becomes of the query. A batch is its byte length
//! (`u32`, little-endian) and its rows; a row is its cell count and its cells, each a tag byte and its value:
//! integers, floats (their bits) and days little-endian, text as its length and UTF-8 bytes. Nothing is lost:
//! a float comes back with the same bits (NaN, -0.0), text as it was.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};

use crate::error::SqlError;
use crate::rows::Cell;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const NUMERIC: u8 = 5;
const TEXT: u8 = 6;
const DATE: u8 = 7;
const TIMESTAMP: u8 = 8;

/// Rows written to a file, to be read back once all are written.
pub(crate) struct SpillWriter {
    file: File,
    /// Bytes of whole batches written.
    written: u64,
}

impl SpillWriter {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self { file: tempfile::tempfile()?, written: 0 })
    }

    /// Appends a batch encoded by [`encode`]. Blocking: called off the runtime's threads.
    pub(crate) fn append(&mut self, batch: &[u8]) -> std::io::Result<()> {
        let length = u32::try_from(batch.len()).map_err(std::io::Error::other)?;
        self.file.write_all(&length.to_le_bytes())?;
        self.file.write_all(batch)?;
        self.written += 4 + u64::from(length);
        Ok(())
    }

    /// The batches written, to be read from the first. Only whole batches are read: after a failed append, what
    /// it wrote of its batch is not.
    pub(crate) fn finish(mut self) -> std::io::Result<SpillReader> {
        self.file.seek(SeekFrom::Start(0))?;
        Ok(SpillReader { file: BufReader::with_capacity(64 * 1024, self.file), left: self.written })
    }
}

/// Batches read back from a [`SpillWriter`]'s file.
pub(crate) struct SpillReader {
    file: BufReader<File>,
    left: u64,
}

impl SpillReader {
    /// The next batch's rows, `None` after the last. Blocking: called off the runtime's threads.
    pub(crate) fn next_batch(&mut self) -> Result<Option<Vec<Vec<Cell>>>, SqlError> {
        if self.left == 0 {
            return Ok(None);
        }
        let unreadable = |e: std::io::Error| SqlError::Internal(format!("reading rows back from disk: {e}"));
        let mut length = [0u8; 4];
        self.file.read_exact(&mut length).map_err(unreadable)?;
        let length = u32::from_le_bytes(length);
        let mut batch = vec![0u8; length as usize];
        self.file.read_exact(&mut batch).map_err(unreadable)?;
        self.left = self.left.saturating_sub(4 + u64::from(length));
        decode(&batch).map(Some)
    }
}

/// A batch of rows as it is written.
pub(crate) fn encode<'a>(rows: impl IntoIterator<Item = &'a Vec<Cell>>) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        put_len(&mut out, row.len());
        for cell in row {
            match cell {
                Cell::Null => out.push(NULL),
                Cell::Bool(b) => out.push(if *b { TRUE } else { FALSE }),
                Cell::Int(i) => {
                    out.push(INT);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                Cell::Float(f) => {
                    out.push(FLOAT);
                    out.extend_from_slice(&f.to_bits().to_le_bytes());
                }
                Cell::Numeric(s) | Cell::Text(s) => {
                    out.push(if matches!(cell, Cell::Numeric(_)) { NUMERIC } else { TEXT });
                    put_len(&mut out, s.len());
                    out.extend_from_slice(s.as_bytes());
                }
                Cell::Date(days) => {
                    out.push(DATE);
                    out.extend_from_slice(&days.to_le_bytes());
                }
                Cell::Timestamp(micros) => {
                    out.push(TIMESTAMP);
                    out.extend_from_slice(&micros.to_le_bytes());
                }
            }
        }
    }
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // A row's cells and a text's bytes are far below 4 GiB: the batches they come in are at most 64 KiB but for a
    // single row, which the backend's own message length (an i32) bounds.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

/// The rows of a batch [`encode`] wrote.
fn decode(mut bytes: &[u8]) -> Result<Vec<Vec<Cell>>, SqlError> {
    let mut rows = Vec::new();
    while !bytes.is_empty() {
        let cells = take_len(&mut bytes)?;
        let mut row = Vec::with_capacity(cells.min(bytes.len()));
        for _ in 0..cells {
            let [tag] = take::<1>(&mut bytes)?;
            row.push(match tag {
                NULL => Cell::Null,
                FALSE => Cell::Bool(false),
                TRUE => Cell::Bool(true),
                INT => Cell::Int(i64::from_le_bytes(take(&mut bytes)?)),
                FLOAT => Cell::Float(f64::from_bits(u64::from_le_bytes(take(&mut bytes)?))),
                NUMERIC => Cell::Numeric(take_text(&mut bytes)?),
                TEXT => Cell::Text(take_text(&mut bytes)?),
                DATE => Cell::Date(i32::from_le_bytes(take(&mut bytes)?)),
                TIMESTAMP => Cell::Timestamp(i64::from_le_bytes(take(&mut bytes)?)),
                other => return Err(corrupt(&format!("a cell tagged {other}"))),
            });
        }
        rows.push(row);
    }
    Ok(rows)
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], SqlError> {
    let (head, rest) = bytes.split_first_chunk::<N>().ok_or_else(|| corrupt("a batch cut short"))?;
    *bytes = rest;
    Ok(*head)
}

fn take_len(bytes: &mut &[u8]) -> Result<usize, SqlError> {
    Ok(u32::from_le_bytes(take(bytes)?) as usize)
}

fn take_text(bytes: &mut &[u8]) -> Result<String, SqlError> {
    let len = take_len(bytes)?;
    let text = bytes.get(..len).ok_or_else(|| corrupt("a text cut short"))?;
    *bytes = bytes.get(len..).unwrap_or_default();
    String::from_utf8(text.to_vec()).map_err(|_| corrupt("a text that is not UTF-8"))
}

fn corrupt(what: &str) -> SqlError {
    SqlError::Internal(format!("rows read back from disk are corrupt: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Vec<Cell>> {
        vec![
            vec![Cell::Null, Cell::Bool(false), Cell::Bool(true), Cell::Int(i64::MIN), Cell::Int(-1)],
            vec![Cell::Float(f64::NAN), Cell::Float(-0.0), Cell::Float(f64::INFINITY), Cell::Float(0.1)],
            vec![Cell::Numeric("-12345678901234567890.000001".into()), Cell::Text(String::new())],
            vec![Cell::Text("Zürich, 東京, \u{1F600}\0".into()), Cell::Date(-719_162), Cell::Timestamp(i64::MAX)],
            vec![],
        ]
    }

    fn same(a: &[Vec<Cell>], b: &[Vec<Cell>]) -> bool {
        // Compared by their bits, so that NaN equals NaN and -0.0 differs from 0.0.
        let bits = |rows: &[Vec<Cell>]| encode(rows).iter().map(|b| format!("{b:02x}")).collect::<String>();
        a.len() == b.len() && bits(a) == bits(b) && format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn every_kind_of_cell_comes_back_as_it_was_written() {
        let rows = every_kind();
        let mut writer = SpillWriter::new().expect("a temporary file");
        writer.append(&encode(&rows)).expect("written");
        writer.append(&encode(&rows[..1])).expect("written");
        let mut reader = writer.finish().expect("rewound");
        let first = reader.next_batch().expect("read").expect("a batch");
        assert!(same(&first, &rows), "{first:?}");
        let second = reader.next_batch().expect("read").expect("a batch");
        assert!(same(&second, &rows[..1]), "{second:?}");
        assert!(reader.next_batch().expect("read").is_none());
    }

    #[test]
    fn a_batch_cut_short_or_badly_tagged_is_an_error_not_a_panic() {
        let whole = encode(&every_kind());
        for cut in 1..whole.len() {
            let Some(head) = whole.get(..cut) else { continue };
            // Some cuts fall between rows and decode to fewer rows; none panics.
            let _ = decode(head);
        }
        assert!(matches!(decode(&[1, 0, 0, 0, 99]), Err(SqlError::Internal(_))));
        assert!(matches!(decode(&[1, 0, 0, 0, TEXT, 9, 0, 0, 0, b'a']), Err(SqlError::Internal(_))));
        assert!(matches!(decode(&[1, 0, 0, 0, TEXT, 1, 0, 0, 0, 0xff]), Err(SqlError::Internal(_))));
    }
}
