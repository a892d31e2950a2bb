//! GGUF reader (v2 and v3). Parses the header, metadata and tensor table from a byte
//! source; tensor data stays in the source and is streamed out in chunks by the loader,
//! so a model never has to fit in (wasm) memory at once.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::quant::GgmlType;

const MAGIC: u32 = 0x4655_4747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT: u64 = 32;
/// Guards against corrupt counts that would make us allocate absurd amounts.
const MAX_TENSORS: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;

/// Where the bytes of a GGUF file come from: a native file, a browser Blob or Cache entry.
#[allow(async_fn_in_trait)]
pub trait ByteSource {
    /// Total size in bytes.
    fn len(&self) -> u64;
    /// Reads exactly `len` bytes at `offset`, or fewer only if the source ends first.
    async fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

/// A GGUF file held in memory (tests, small files).
impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        Vec::len(self) as u64
    }
    async fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let start = (offset as usize).min(Vec::len(self));
        let end = start.saturating_add(len).min(Vec::len(self));
        Ok(self[start..end].to_vec())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource {
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path)
            .map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
        let len = file.metadata().map_err(|e| Error::Io(e.to_string()))?.len();
        Ok(Self { file, len })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    async fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let len = len.min(self.len.saturating_sub(offset) as usize);
        let mut buf = vec![0u8; len];
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| Error::Io(e.to_string()))?;
        self.file.read_exact(&mut buf).map_err(|e| Error::Io(e.to_string()))?;
        Ok(buf)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        Some(match *self {
            Value::U8(v) => v as u64,
            Value::U16(v) => v as u64,
            Value::U32(v) => v as u64,
            Value::U64(v) => v,
            Value::I8(v) if v >= 0 => v as u64,
            Value::I16(v) if v >= 0 => v as u64,
            Value::I32(v) if v >= 0 => v as u64,
            Value::I64(v) if v >= 0 => v as u64,
            _ => return None,
        })
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: dims[0] is the fastest-varying (row length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute offset of the tensor's data in the file.
    pub offset: u64,
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Row length and row count when viewed as a matrix.
    pub fn rows_cols(&self) -> (u64, u64) {
        let cols = self.dims[0];
        (self.n_elements() / cols.max(1), cols)
    }
}

#[derive(Debug)]
pub struct Gguf {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub data_offset: u64,
    pub file_size: u64,
}

impl Gguf {
    /// Reads the header from `src`, fetching more of the file until it is complete.
    pub async fn read(src: &mut impl ByteSource) -> Result<Gguf> {
        let file_size = src.len();
        let mut want = (4usize << 20).min(file_size as usize);
        loop {
            let bytes = src.read_at(0, want).await?;
            match parse_header(&bytes, file_size) {
                Err(Error::NeedMore) if (bytes.len() as u64) < file_size => {
                    want = (want * 4).min(file_size as usize);
                }
                Err(Error::NeedMore) => {
                    return Err(Error::Corrupt(format!(
                        "file is truncated: its {file_size}-byte header section ends early"
                    )))
                }
                other => return other,
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.get_u64(key)
            .ok_or_else(|| Error::Corrupt(format!("metadata key `{key}` is missing or not an integer")))
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file_size: u64,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.pos as u64 + n as u64 > self.file_size {
            return Err(Error::Corrupt(format!(
                "file is truncated or corrupt: a header field at byte {} needs {n} bytes but the file has {}",
                self.pos, self.file_size
            )));
        }
        if self.pos + n > self.buf.len() {
            return Err(Error::NeedMore);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > self.file_size {
            return Err(Error::Corrupt(format!("string length {n} at byte {} exceeds the file", self.pos)));
        }
        let bytes = self.take(n as usize)?;
        // Some vocabularies hold invalid UTF-8 pieces; keep them lossily rather than fail.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.u16()? as i16),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(Error::Corrupt(format!("invalid bool byte {b} in metadata"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(Error::Corrupt("metadata arrays nested too deeply".into()));
                }
                let elem_ty = self.u32()?;
                let n = self.u64()?;
                if n > self.file_size {
                    return Err(Error::Corrupt(format!("array length {n} exceeds the file size")));
                }
                let mut v = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    v.push(self.value(elem_ty, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            t => return Err(Error::Corrupt(format!("unknown metadata value type {t}"))),
        })
    }
}

fn parse_header(buf: &[u8], file_size: u64) -> Result<Gguf> {
    let mut c = Cursor { buf, pos: 0, file_size };
    let magic = c.u32()?;
    if magic != MAGIC {
        return Err(Error::Corrupt(format!(
            "not a GGUF file: magic bytes are {:02x?}, expected \"GGUF\"",
            magic.to_le_bytes()
        )));
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(Error::Unsupported(format!("GGUF version {version} (supported: 2 and 3)")));
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    if n_tensors > MAX_TENSORS || n_kv > MAX_TENSORS {
        return Err(Error::Corrupt(format!("implausible counts: {n_tensors} tensors, {n_kv} metadata keys")));
    }
    let mut metadata = HashMap::new();
    for _ in 0..n_kv {
        let key = c.string()?;
        let ty = c.u32()?;
        let value = c.value(ty, 0)?;
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => return Err(Error::Corrupt(format!("general.alignment {v:?} is not a power of two"))),
        },
    };
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = c.string()?;
        let n_dims = c.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::Corrupt(format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64()?);
        }
        let ty_id = c.u32()?;
        let offset = c.u64()?;
        raw.push((name, dims, ty_id, offset));
    }
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ty_id, offset) in raw {
        let ty = GgmlType::from_id(ty_id)
            .map_err(|e| Error::Unsupported(format!("tensor `{name}`: {e}")))?;
        let n: u64 = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| {
            Error::Corrupt(format!("tensor `{name}` has an overflowing shape {dims:?}"))
        })?;
        if dims[0] % ty.block_size() as u64 != 0 {
            return Err(Error::Corrupt(format!(
                "tensor `{name}`: row length {} is not a multiple of the {:?} block size {}",
                dims[0],
                ty,
                ty.block_size()
            )));
        }
        let size = n / ty.block_size() as u64 * ty.block_bytes() as u64;
        if offset % alignment != 0 {
            return Err(Error::Corrupt(format!("tensor `{name}` offset {offset} is not {alignment}-aligned")));
        }
        let abs = data_offset + offset;
        if abs.checked_add(size).is_none_or(|end| end > file_size) {
            return Err(Error::Corrupt(format!(
                "file is truncated: tensor `{name}` needs bytes {abs}..{} but the file has {file_size}",
                abs.saturating_add(size)
            )));
        }
        tensors.push(TensorInfo { name, dims, ty, offset: abs, size });
    }
    Ok(Gguf { version, metadata, tensors, data_offset, file_size })
}

/// Writes GGUF v3 files. Used by tests to build small models of every family and quant type.
pub mod writer {
    use super::Value;
    use crate::quant::GgmlType;

    pub struct TensorData {
        pub name: String,
        pub dims: Vec<u64>,
        pub ty: GgmlType,
        pub bytes: Vec<u8>,
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    fn put_value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend(x.to_le_bytes()),
            Value::I16(x) => out.extend(x.to_le_bytes()),
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::I32(x) => out.extend(x.to_le_bytes()),
            Value::U64(x) => out.extend(x.to_le_bytes()),
            Value::I64(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(*x as u8),
            Value::String(s) => put_str(out, s),
            Value::Array(a) => {
                out.extend(a.first().map_or(4, type_id).to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for x in a {
                    put_value(out, x);
                }
            }
        }
    }

    pub fn write(metadata: &[(String, Value)], tensors: &[TensorData]) -> Vec<u8> {
        const ALIGN: usize = 32;
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut out, k);
            out.extend(type_id(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        for t in tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.id().to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = (offset + t.bytes.len()).div_ceil(ALIGN) * ALIGN;
        }
        out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
        for t in tensors {
            out.extend(&t.bytes);
            out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
        }
        out
    }
}
