//! Avro binary primitives: a bounded cursor that refuses what the spec does not allow, and a
//! writer of the canonical (minimal) forms.

/// Why a body was refused. `reason()` is the bounded label the daemon reports (the same labels
/// as the Python decoder in auditor/events/wire.py).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A length, count or value runs past the end of the body.
    Eof,
    /// A varint with redundant continuation bytes (more than one encoding of one value).
    NonMinimal,
    /// A varint longer than 10 bytes, or one whose value does not fit 64 bits.
    VarintOverflow,
    /// An int field holding a value outside 32 bits.
    IntRange,
    NegativeLength,
    /// A block count larger than the rest of the body could hold.
    CountTooLarge,
    /// A negative block count whose byte size does not match the items in the block.
    BlockSize,
    DuplicateKey,
    BadBoolean(u8),
    BadUnion(i64),
    BadEnum(i64),
    UnknownSymbol,
    /// A writer union branch with no counterpart in the reader schema.
    NoReaderBranch,
    BadUtf8,
    TooDeep,
    Trailing(usize),
}

impl Fault {
    pub fn reason(&self) -> &'static str {
        match self {
            Fault::BadUnion(i) if *i >= 0 => "undecodable",
            Fault::BadEnum(_) | Fault::UnknownSymbol | Fault::NoReaderBranch | Fault::BadUtf8 | Fault::IntRange => "undecodable",
            Fault::VarintOverflow => "undecodable",
            _ => "hostile_encoding",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Fault::Eof => "Avro body ends early: a length or count is larger than the message".into(),
            Fault::NonMinimal => "non-minimal varint in the Avro body (hostile encoding)".into(),
            Fault::VarintOverflow => "varint longer than 64 bits in the Avro body (hostile encoding)".into(),
            Fault::IntRange => "int value outside 32 bits".into(),
            Fault::NegativeLength => "negative length in the Avro body (hostile encoding)".into(),
            Fault::CountTooLarge => "block count larger than the message (hostile encoding)".into(),
            Fault::BlockSize => "block byte size does not match its items (hostile encoding)".into(),
            Fault::DuplicateKey => "duplicate map key (ambiguous, hostile encoding)".into(),
            Fault::BadBoolean(b) => format!("boolean byte {b:#04x} is neither 0 nor 1 (hostile encoding)"),
            Fault::BadUnion(i) => format!("union branch index {i} out of range"),
            Fault::BadEnum(i) => format!("enum index {i} out of range"),
            Fault::UnknownSymbol => "enum symbol unknown to the reader schema, which has no default".into(),
            Fault::NoReaderBranch => "union branch the reader schema cannot read".into(),
            Fault::BadUtf8 => "string is not valid UTF-8".into(),
            Fault::TooDeep => "value nests too deeply".into(),
            Fault::Trailing(n) => format!("{n} trailing bytes after the Avro body (hostile encoding)"),
        }
    }
}

/// A fault and the field path where it happened (innermost last once reversed).
#[derive(Debug, Clone)]
pub struct Located {
    pub fault: Fault,
    pub path: Vec<String>,
}

impl Located {
    pub fn message(&self) -> String {
        if self.path.is_empty() {
            self.fault.message()
        } else {
            let path: Vec<&str> = self.path.iter().rev().map(String::as_str).collect();
            format!("{} (at '{}')", self.fault.message(), path.join("."))
        }
    }
}

impl From<Fault> for Located {
    fn from(fault: Fault) -> Self {
        Located { fault, path: Vec::new() }
    }
}

pub struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A zigzag varint long, refusing non-minimal and over-long encodings.
    #[inline]
    pub fn long(&mut self) -> Result<i64, Fault> {
        let mut n: u64 = 0;
        let mut shift = 0u32;
        let start = self.pos;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(Fault::Eof);
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(Fault::VarintOverflow);
            }
            n |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                if b == 0 && self.pos - start > 1 {
                    return Err(Fault::NonMinimal);
                }
                break;
            }
            shift += 7;
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    #[inline]
    pub fn int(&mut self) -> Result<i32, Fault> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| Fault::IntRange)
    }

    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Fault> {
        if n > self.remaining() {
            return Err(Fault::Eof);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A length-prefixed byte string (bytes or string).
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8], Fault> {
        let n = self.long()?;
        if n < 0 {
            return Err(Fault::NegativeLength);
        }
        self.take(usize::try_from(n).map_err(|_| Fault::Eof)?)
    }

    #[inline]
    pub fn string(&mut self) -> Result<&'a str, Fault> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| Fault::BadUtf8)
    }

    #[inline]
    pub fn boolean(&mut self) -> Result<bool, Fault> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Fault::BadBoolean(b)),
        }
    }
}

/// Append the minimal zigzag varint of `v`.
#[inline]
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z > 0x7F {
        out.push((z as u8 & 0x7F) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
pub fn varint_bytes(v: i64) -> ([u8; 10], usize) {
    let mut buf = [0u8; 10];
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 0;
    while z > 0x7F {
        buf[n] = (z as u8 & 0x7F) | 0x80;
        z >>= 7;
        n += 1;
    }
    buf[n] = z as u8;
    (buf, n + 1)
}

#[inline]
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: i64) -> Vec<u8> {
        let mut o = Vec::new();
        put_long(&mut o, v);
        o
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, -1, 63, 64, -64, -65, 1 << 20, i64::MAX, i64::MIN, i32::MAX as i64, i32::MIN as i64] {
            let b = enc(v);
            let mut c = Cursor::new(&b);
            assert_eq!(c.long().unwrap(), v);
            assert_eq!(c.remaining(), 0);
        }
    }

    #[test]
    fn non_minimal_and_overlong_varints_are_refused() {
        assert_eq!(Cursor::new(&[0x82, 0x00]).long(), Err(Fault::NonMinimal));
        assert_eq!(Cursor::new(&[0x80, 0x80, 0x00]).long(), Err(Fault::NonMinimal));
        assert_eq!(Cursor::new(&[0xFF; 11]).long(), Err(Fault::VarintOverflow));
        let mut ten = vec![0xFF; 9];
        ten.push(0x02);
        assert_eq!(Cursor::new(&ten).long(), Err(Fault::VarintOverflow));
        assert_eq!(Cursor::new(&[0x80]).long(), Err(Fault::Eof));
    }
}
