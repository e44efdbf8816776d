//! The subset of `onnx.proto` (ONNX IR version 8) that the exporter writes, as `prost`
//! messages declared by hand: no build script and no `protoc`.
//!
//! Field numbers and types are those of `onnx/onnx.proto` in the ONNX repository; messages
//! and fields the exporter never writes are left out (a protobuf reader skips what it does not
//! know, and an absent optional field reads as unset). Encoding one is `prost::Message::
//! encode_to_vec`; decoding one back (as the tests do) is `Message::decode`.

// The derive writes the encoding; the fields are documented by the names onnx.proto gives them.
#![allow(missing_docs)]

/// `TensorProto.DataType.FLOAT`.
pub const DATA_TYPE_FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const DATA_TYPE_INT64: i32 = 7;

/// `AttributeProto.AttributeType`: the values the exporter uses.
pub mod attribute_type {
    /// A single float (`f`).
    pub const FLOAT: i32 = 1;
    /// A single integer (`i`).
    pub const INT: i32 = 2;
    /// A byte string (`s`).
    pub const STRING: i32 = 3;
    /// A list of integers (`ints`).
    pub const INTS: i32 = 7;
}

/// A whole model: the graph plus the operator sets it relies on and free-form metadata.
///
/// ```
/// use fracture_nn::onnx::proto::ModelProto;
/// use prost::Message;
/// let m = ModelProto { ir_version: 8, producer_name: "fracture-nn".into(), ..Default::default() };
/// let back = ModelProto::decode(m.encode_to_vec().as_slice()).unwrap();
/// assert_eq!(back.producer_name, "fracture-nn");
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// An operator set and its version (`""` is the default ONNX domain).
///
/// ```
/// let o = fracture_nn::onnx::proto::OperatorSetIdProto { domain: String::new(), version: 17 };
/// assert_eq!(o.version, 17);
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// A key-value pair (`metadata_props`).
///
/// ```
/// let e = fracture_nn::onnx::proto::StringStringEntryProto { key: "threshold".into(), value: "0.5".into() };
/// assert_eq!(e.key, "threshold");
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// A computation graph: nodes in topological order, constant tensors, inputs and outputs.
///
/// ```
/// let g = fracture_nn::onnx::proto::GraphProto { name: "g".into(), ..Default::default() };
/// assert!(g.node.is_empty());
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

/// One operator call: named inputs and outputs, the operator, its attributes.
///
/// ```
/// let n = fracture_nn::onnx::proto::NodeProto { op_type: "Relu".into(), ..Default::default() };
/// assert_eq!(n.op_type, "Relu");
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// A named attribute of a node; `r#type` says which value field is set.
///
/// ```
/// use fracture_nn::onnx::proto::{attribute_type, AttributeProto};
/// let a = AttributeProto { name: "group".into(), i: Some(32), r#type: attribute_type::INT, ..Default::default() };
/// assert_eq!(a.i, Some(32));
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    // Optional (proto2 presence): `i = 0` must still be written, or the ONNX checker sees an
    // attribute with no value.
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

/// A constant tensor (an initializer): its shape, element type and values as raw
/// little-endian bytes.
///
/// ```
/// let t = fracture_nn::onnx::proto::TensorProto { name: "w".into(), dims: vec![2], data_type: 1, raw_data: vec![0; 8], ..Default::default() };
/// assert_eq!(t.dims, [2]);
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// The name and type of a graph input or output.
///
/// ```
/// let v = fracture_nn::onnx::proto::ValueInfoProto { name: "image".into(), ..Default::default() };
/// assert!(v.r#type.is_none());
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// A type: only tensors here (`TypeProto.tensor_type`, one case of the `value` oneof).
///
/// ```
/// let t = fracture_nn::onnx::proto::TypeProto::default();
/// assert!(t.tensor_type.is_none());
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `TypeProto.Tensor`: element type and shape.
///
/// ```
/// let t = fracture_nn::onnx::proto::TensorTypeProto { elem_type: 1, shape: None };
/// assert_eq!(t.elem_type, 1);
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// A shape: one entry per axis.
///
/// ```
/// let s = fracture_nn::onnx::proto::TensorShapeProto { dim: vec![] };
/// assert!(s.dim.is_empty());
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a fixed size or a named (dynamic) one.
///
/// ```
/// use fracture_nn::onnx::proto::{dimension::Value, Dimension};
/// let d = Dimension { value: Some(Value::DimParam("N".into())) };
/// assert!(matches!(d.value, Some(Value::DimParam(_))));
/// ```
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    #[prost(oneof = "dimension::Value", tags = "1, 2")]
    pub value: Option<dimension::Value>,
}

/// The `value` oneof of [`Dimension`].
pub mod dimension {
    /// A fixed size (`dim_value`) or a symbolic one (`dim_param`).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A fixed size.
        #[prost(int64, tag = "1")]
        DimValue(i64),
        /// A named, dynamic size (the batch).
        #[prost(string, tag = "2")]
        DimParam(String),
    }
}
