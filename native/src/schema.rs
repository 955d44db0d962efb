//! Avro schemas (`.avsc` JSON) parsed into an arena of nodes, once, at construction.
//!
//! Named types are registered before their bodies are parsed, so recursive schemas resolve.
//! Logical types are kept only where the record encoder needs them (timestamp-micros longs,
//! which it accepts as `datetime`); the binary encoding never depends on them.

use std::collections::HashMap;

use serde_json::Value;

pub type NodeId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logical {
    None,
    TimestampMicros,
    TimestampMillis,
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub aliases: Vec<String>,
    pub ty: NodeId,
    pub default: Option<Value>,
}

#[derive(Debug, Clone)]
pub enum Node {
    Null,
    Boolean,
    Int,
    Long(Logical),
    Float,
    Double,
    Bytes,
    String,
    Record { name: String, fields: Vec<Field> },
    Enum { name: String, symbols: Vec<String>, default: Option<usize> },
    Array(NodeId),
    Map(NodeId),
    Union(Vec<NodeId>),
    Fixed { name: String, size: usize },
}

impl Node {
    /// The short name of a named type (records, enums, fixed), for union branch matching.
    pub fn short_name(&self) -> Option<&str> {
        match self {
            Node::Record { name, .. } | Node::Enum { name, .. } | Node::Fixed { name, .. } => {
                Some(name.rsplit('.').next().unwrap_or(name))
            }
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Boolean => "boolean",
            Node::Int => "int",
            Node::Long(_) => "long",
            Node::Float => "float",
            Node::Double => "double",
            Node::Bytes => "bytes",
            Node::String => "string",
            Node::Record { .. } => "record",
            Node::Enum { .. } => "enum",
            Node::Array(_) => "array",
            Node::Map(_) => "map",
            Node::Union(_) => "union",
            Node::Fixed { .. } => "fixed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Schema {
    pub nodes: Vec<Node>,
    pub root: NodeId,
}

const MAX_SCHEMA_DEPTH: usize = 64;

struct Parser {
    nodes: Vec<Node>,
    names: HashMap<String, NodeId>,
}

fn fullname(name: &str, ns: Option<&str>) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        match ns {
            Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
            _ => name.to_string(),
        }
    }
}

impl Parser {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn primitive(&mut self, name: &str, logical: Logical) -> Option<NodeId> {
        let node = match name {
            "null" => Node::Null,
            "boolean" => Node::Boolean,
            "int" => Node::Int,
            "long" => Node::Long(logical),
            "float" => Node::Float,
            "double" => Node::Double,
            "bytes" => Node::Bytes,
            "string" => Node::String,
            _ => return None,
        };
        Some(self.push(node))
    }

    fn parse(&mut self, v: &Value, ns: Option<&str>, depth: usize) -> Result<NodeId, String> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err("schema nests too deeply".into());
        }
        match v {
            Value::String(name) => {
                if let Some(id) = self.primitive(name, Logical::None) {
                    return Ok(id);
                }
                let full = fullname(name, ns);
                self.names
                    .get(&full)
                    .or_else(|| self.names.get(name))
                    .copied()
                    .ok_or_else(|| format!("unknown type name '{name}'"))
            }
            Value::Array(branches) => {
                let mut ids = Vec::with_capacity(branches.len());
                for b in branches {
                    ids.push(self.parse(b, ns, depth + 1)?);
                }
                Ok(self.push(Node::Union(ids)))
            }
            Value::Object(obj) => {
                let ty = obj.get("type").ok_or("a schema object has no 'type'")?;
                let ty_name = match ty {
                    Value::String(s) => s.as_str(),
                    other => return self.parse(other, ns, depth + 1),
                };
                let logical = match obj.get("logicalType").and_then(Value::as_str) {
                    Some("timestamp-micros") | Some("local-timestamp-micros") => Logical::TimestampMicros,
                    Some("timestamp-millis") | Some("local-timestamp-millis") => Logical::TimestampMillis,
                    _ => Logical::None,
                };
                if let Some(id) = self.primitive(ty_name, logical) {
                    return Ok(id);
                }
                let own_ns = obj.get("namespace").and_then(Value::as_str).or(ns);
                match ty_name {
                    "record" | "error" => {
                        let name = obj.get("name").and_then(Value::as_str).ok_or("a record has no name")?;
                        let full = fullname(name, own_ns);
                        let child_ns = full.rsplit_once('.').map(|(n, _)| n.to_string());
                        let id = self.push(Node::Null); // placeholder: fields may refer to the record
                        self.names.insert(full.clone(), id);
                        let mut fields = Vec::new();
                        for f in obj.get("fields").and_then(Value::as_array).ok_or("a record has no fields")? {
                            let fname = f.get("name").and_then(Value::as_str).ok_or("a field has no name")?;
                            let fty = self.parse(
                                f.get("type").ok_or_else(|| format!("field '{fname}' has no type"))?,
                                child_ns.as_deref(),
                                depth + 1,
                            )?;
                            let aliases = f
                                .get("aliases")
                                .and_then(Value::as_array)
                                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                                .unwrap_or_default();
                            fields.push(Field {
                                name: fname.to_string(),
                                aliases,
                                ty: fty,
                                default: f.get("default").cloned(),
                            });
                        }
                        self.nodes[id] = Node::Record { name: full, fields };
                        Ok(id)
                    }
                    "enum" => {
                        let name = obj.get("name").and_then(Value::as_str).ok_or("an enum has no name")?;
                        let full = fullname(name, own_ns);
                        let symbols: Vec<String> = obj
                            .get("symbols")
                            .and_then(Value::as_array)
                            .ok_or("an enum has no symbols")?
                            .iter()
                            .map(|s| s.as_str().map(String::from).ok_or("an enum symbol is not a string"))
                            .collect::<Result<_, _>>()?;
                        let default = obj
                            .get("default")
                            .and_then(Value::as_str)
                            .and_then(|d| symbols.iter().position(|s| s == d));
                        let id = self.push(Node::Enum { name: full.clone(), symbols, default });
                        self.names.insert(full, id);
                        Ok(id)
                    }
                    "fixed" => {
                        let name = obj.get("name").and_then(Value::as_str).ok_or("a fixed has no name")?;
                        let size = obj.get("size").and_then(Value::as_u64).ok_or("a fixed has no size")? as usize;
                        let full = fullname(name, own_ns);
                        let id = self.push(Node::Fixed { name: full.clone(), size });
                        self.names.insert(full, id);
                        Ok(id)
                    }
                    "array" => {
                        let items = self.parse(obj.get("items").ok_or("an array has no items")?, own_ns, depth + 1)?;
                        Ok(self.push(Node::Array(items)))
                    }
                    "map" => {
                        let values = self.parse(obj.get("values").ok_or("a map has no values")?, own_ns, depth + 1)?;
                        Ok(self.push(Node::Map(values)))
                    }
                    other => {
                        let full = fullname(other, own_ns);
                        self.names
                            .get(&full)
                            .or_else(|| self.names.get(other))
                            .copied()
                            .ok_or_else(|| format!("unknown type '{other}'"))
                    }
                }
            }
            _ => Err(format!("not an Avro schema: {v}")),
        }
    }
}

impl Schema {
    pub fn parse(text: &str) -> Result<Schema, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("schema is not JSON: {e}"))?;
        let mut p = Parser { nodes: Vec::new(), names: HashMap::new() };
        let root = p.parse(&v, None, 0)?;
        Ok(Schema { nodes: p.nodes, root })
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Fewest bytes one value of this type takes on the wire (0 for null and empty records).
    pub fn min_size(&self, id: NodeId) -> usize {
        self.min_size_at(id, 0)
    }

    fn min_size_at(&self, id: NodeId, depth: usize) -> usize {
        if depth > MAX_SCHEMA_DEPTH {
            return 0;
        }
        match self.node(id) {
            Node::Null => 0,
            Node::Boolean | Node::Int | Node::Long(_) | Node::Bytes | Node::String => 1,
            Node::Float => 4,
            Node::Double => 8,
            Node::Enum { .. } | Node::Array(_) | Node::Map(_) | Node::Union(_) => 1,
            Node::Fixed { size, .. } => *size,
            Node::Record { fields, .. } => fields.iter().map(|f| self.min_size_at(f.ty, depth + 1)).sum(),
        }
    }
}
