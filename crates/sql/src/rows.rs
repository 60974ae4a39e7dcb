//! Backend-neutral result rows: column types as PostgreSQL names them, and cell values that both backends
//! produce and both fronts (PostgreSQL wire, Trino JSON) consume.

use std::pin::Pin;

use futures::Stream;

use super::error::SqlError;

/// The types a result column may have. Anything else is converted to text by the backend (DataFusion) or
/// refused (PostgreSQL), never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Date,
    Timestamp,
}

impl ColumnType {
    /// The PostgreSQL type OID.
    pub fn oid(self) -> u32 {
        match self {
            ColumnType::Bool => 16,
            ColumnType::Int2 => 21,
            ColumnType::Int4 => 23,
            ColumnType::Int8 => 20,
            ColumnType::Float4 => 700,
            ColumnType::Float8 => 701,
            ColumnType::Numeric => 1700,
            ColumnType::Text => 25,
            ColumnType::Date => 1082,
            ColumnType::Timestamp => 1114,
        }
    }

    /// The type's name as PostgreSQL prints it (`format_type`), and as Trino clients read it.
    pub fn pg_name(self) -> &'static str {
        match self {
            ColumnType::Bool => "boolean",
            ColumnType::Int2 => "smallint",
            ColumnType::Int4 => "integer",
            ColumnType::Int8 => "bigint",
            ColumnType::Float4 => "real",
            ColumnType::Float8 => "double precision",
            ColumnType::Numeric => "numeric",
            ColumnType::Text => "text",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp without time zone",
        }
    }

    /// Reads a catalog type (`bigint`, `numeric(12,2)`, `varchar(20)`); `None` for types the gateway does
    /// not carry.
    pub fn from_sql_type(text: &str) -> Option<ColumnType> {
        let t = text.trim().to_ascii_lowercase();
        let base = t.split('(').next().unwrap_or("").trim();
        Some(match base {
            "boolean" | "bool" => ColumnType::Bool,
            "smallint" | "int2" => ColumnType::Int2,
            "integer" | "int" | "int4" => ColumnType::Int4,
            "bigint" | "int8" => ColumnType::Int8,
            "real" | "float4" => ColumnType::Float4,
            "double precision" | "float8" | "float" => ColumnType::Float8,
            "numeric" | "decimal" => ColumnType::Numeric,
            "text" | "varchar" | "character varying" | "char" | "character" | "bpchar" | "name" => ColumnType::Text,
            "date" => ColumnType::Date,
            "timestamp" | "timestamp without time zone" => ColumnType::Timestamp,
            _ => return None,
        })
    }
}

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// One value. Numerics travel as their exact decimal text; dates as days and timestamps as microseconds
/// since 1970-01-01.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Numeric(String),
    Text(String),
    Date(i32),
    Timestamp(i64),
}

impl Cell {
    /// The PostgreSQL text form, `None` for NULL.
    pub fn to_text(&self) -> Option<String> {
        Some(match self {
            Cell::Null => return None,
            Cell::Bool(b) => if *b { "t" } else { "f" }.to_owned(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => format_float(*f),
            Cell::Numeric(s) | Cell::Text(s) => s.clone(),
            Cell::Date(days) => format_date(*days),
            Cell::Timestamp(micros) => format_timestamp(*micros),
        })
    }

    /// The JSON form Trino clients read.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Cell::Null => serde_json::Value::Null,
            Cell::Bool(b) => serde_json::Value::Bool(*b),
            Cell::Int(i) => serde_json::Value::from(*i),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(format_float(*f))),
            other => other.to_text().map(serde_json::Value::String).unwrap_or(serde_json::Value::Null),
        }
    }
}

fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        f.to_string()
    }
}

const UNIX_EPOCH_JULIAN: i32 = 2_440_588;

fn format_date(days: i32) -> String {
    match time::Date::from_julian_day(UNIX_EPOCH_JULIAN.saturating_add(days)) {
        Ok(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        Err(_) => days.to_string(),
    }
}

fn format_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => {
            let base = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            if frac == 0 { base } else { format!("{base}.{}", format!("{frac:06}").trim_end_matches('0')) }
        }
        Err(_) => micros.to_string(),
    }
}

/// A stream of rows with bounded memory: backends produce rows as they read them.
pub type RowStream = Pin<Box<dyn Stream<Item = Result<Vec<Cell>, SqlError>> + Send>>;

/// A query's result: its columns and its rows, still to be read.
pub struct RowSet {
    pub columns: Vec<Column>,
    pub rows: RowStream,
}

impl std::fmt::Debug for RowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowSet").field("columns", &self.columns).finish_non_exhaustive()
    }
}

/// A result read whole and kept, to be given again without running its statement: a constant statement's
/// (`backend::constant`), a catalog query's over a session's kept view (`introspect`).
#[derive(Debug)]
pub struct Answer {
    columns: Vec<Column>,
    rows: Vec<Vec<Cell>>,
}

impl Answer {
    pub fn new(columns: Vec<Column>, rows: Vec<Vec<Cell>>) -> Self {
        Answer { columns, rows }
    }

    /// Reads `set` whole.
    pub async fn collect(set: RowSet) -> Result<Self, SqlError> {
        use futures::TryStreamExt;
        let rows = set.rows.try_collect().await?;
        Ok(Answer { columns: set.columns, rows })
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The answer as a fresh result, as the engine gave it.
    pub fn row_set(&self) -> RowSet {
        RowSet {
            columns: self.columns.clone(),
            rows: Box::pin(futures::stream::iter(self.rows.clone().into_iter().map(Ok))),
        }
    }

    /// The answer as a result, without a copy.
    pub fn into_row_set(self) -> RowSet {
        RowSet { columns: self.columns, rows: Box::pin(futures::stream::iter(self.rows.into_iter().map(Ok))) }
    }

    /// Reads `set` whole if it weighs at most `limit`. A heavier result is given back as a result still to be
    /// read, the rows read so far first: what is not kept is not held in memory either.
    pub async fn collect_within(set: RowSet, limit: u64) -> Result<Result<Self, RowSet>, SqlError> {
        use futures::{StreamExt, TryStreamExt};
        let RowSet { columns, rows: mut stream } = set;
        let mut weight = Self::columns_weight(&columns);
        let mut rows = Vec::new();
        while let Some(row) = stream.try_next().await? {
            weight += Self::row_weight(&row);
            rows.push(row);
            if weight > limit {
                let rows = futures::stream::iter(rows.into_iter().map(Ok)).chain(stream);
                return Ok(Err(RowSet { columns, rows: Box::pin(rows) }));
            }
        }
        Ok(Ok(Answer { columns, rows }))
    }

    /// About the bytes the answer takes, to bound what is kept.
    pub fn weight(&self) -> u64 {
        Self::columns_weight(&self.columns) + self.rows.iter().map(|row| Self::row_weight(row)).sum::<u64>()
    }

    fn columns_weight(columns: &[Column]) -> u64 {
        64 + columns.iter().map(|c| c.name.len() as u64 + 32).sum::<u64>()
    }

    fn row_weight(row: &[Cell]) -> u64 {
        let cell = |c: &Cell| match c {
            Cell::Numeric(s) | Cell::Text(s) => s.len() as u64 + 32,
            _ => 32,
        };
        row.iter().map(cell).sum()
    }
}

/// PostgreSQL's binary `numeric` format, from and to exact decimal text.
pub mod numeric {
    const NEGATIVE: u16 = 0x4000;

    /// Why a value is not a numeric PostgreSQL can carry.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    pub enum NumericError {
        #[error("not a decimal number: {0:?}")]
        NotDecimal(String),
        #[error("numeric out of range: {0}")]
        OutOfRange(&'static str),
        #[error("truncated numeric")]
        Truncated,
    }

    const NAN: u16 = 0xC000;

    /// Encodes decimal text (`-12.30`) in PostgreSQL's binary numeric format.
    pub fn encode(text: &str, out: &mut Vec<u8>) -> Result<(), NumericError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("nan") {
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&NAN.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            return Ok(());
        }
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int_part, frac_part) = t.split_once('.').unwrap_or((t, ""));
        if int_part.is_empty() && frac_part.is_empty()
            || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(NumericError::NotDecimal(text.to_owned()));
        }
        let dscale = u16::try_from(frac_part.len()).map_err(|_| NumericError::OutOfRange("scale too large"))?;
        // Pad the integer part on the left and the fraction on the right to whole base-10000 digits.
        let int_digits = int_part.trim_start_matches('0');
        let int_pad = (4 - int_digits.len() % 4) % 4;
        let frac_pad = (4 - frac_part.len() % 4) % 4;
        let padded: String = "0".repeat(int_pad) + int_digits + frac_part + &"0".repeat(frac_pad);
        let groups: Vec<i16> =
            padded.as_bytes().chunks(4).map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0'))).collect();
        let int_groups = (int_pad + int_digits.len()) / 4;
        let mut weight = i32::try_from(int_groups).map_err(|_| NumericError::OutOfRange("too large"))? - 1;
        // Strip leading and trailing zero groups, adjusting the weight for the leading ones.
        let mut digits: &[i16] = &groups;
        while let Some((&0, rest)) = digits.split_first() {
            digits = rest;
            weight -= 1;
        }
        while let Some((&0, rest)) = digits.split_last() {
            digits = rest;
        }
        if digits.is_empty() {
            weight = 0;
        }
        let ndigits = i16::try_from(digits.len()).map_err(|_| NumericError::OutOfRange("too many digits"))?;
        let weight = i16::try_from(weight).map_err(|_| NumericError::OutOfRange("exponent out of range"))?;
        out.extend_from_slice(&ndigits.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&(if negative && !digits.is_empty() { NEGATIVE } else { 0 }).to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        Ok(())
    }

    /// Decodes PostgreSQL's binary numeric into decimal text.
    pub fn decode(raw: &[u8]) -> Result<String, NumericError> {
        let word = |i: usize| -> Result<u16, NumericError> {
            raw.get(i..i + 2)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map(u16::from_be_bytes)
                .ok_or(NumericError::Truncated)
        };
        let ndigits = usize::from(word(0)?);
        let weight = i32::from(word(2)? as i16);
        let sign = word(4)?;
        let dscale = usize::from(word(6)?);
        if sign == NAN {
            return Ok("NaN".into());
        }
        let digits: Vec<u16> = (0..ndigits).map(|i| word(8 + 2 * i)).collect::<Result<_, _>>()?;
        // Digit k (0-based) is worth digit * 10000^(weight - k).
        let digit_at = |k: i32| -> u16 { usize::try_from(k).ok().and_then(|i| digits.get(i)).copied().unwrap_or(0) };
        let mut int_part = String::new();
        for k in 0..=weight {
            int_part.push_str(&format!("{:04}", digit_at(k)));
        }
        let mut frac_part = String::new();
        for j in 0..i32::try_from(dscale.div_ceil(4)).unwrap_or(0) {
            frac_part.push_str(&format!("{:04}", digit_at(weight + 1 + j)));
        }
        frac_part.truncate(dscale);
        let int_part = int_part.trim_start_matches('0');
        let int_part = if int_part.is_empty() { "0" } else { int_part };
        let negative = sign == NEGATIVE;
        let mut out = String::new();
        if negative {
            out.push('-');
        }
        out.push_str(int_part);
        if dscale > 0 {
            out.push('.');
            out.push_str(&frac_part);
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn numerics_survive_a_round_trip_through_the_binary_format() {
            for text in ["0", "1", "-1", "12.30", "10000", "123456789.0001", "0.0005", "-0.5", "99990000.25"] {
                let mut buf = Vec::new();
                encode(text, &mut buf).expect("encodes");
                assert_eq!(decode(&buf).expect("decodes"), text, "{text}");
            }
        }

        #[test]
        fn garbage_is_not_a_numeric() {
            assert!(encode("1e5", &mut Vec::new()).is_err());
            assert!(decode(&[0, 1]).is_err());
        }
    }
}
