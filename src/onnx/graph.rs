//! A small builder of ONNX graphs: unique value names, nodes in the order they are added
//! (which is a topological order, since a node only reads values made before it), constant
//! tensors as initializers, and the attribute helpers the exporter needs.

use super::proto::{
    attribute_type, dimension, AttributeProto, Dimension, GraphProto, NodeProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto, DATA_TYPE_FLOAT, DATA_TYPE_INT64,
};

/// An integer attribute.
pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: Some(v),
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

/// A list-of-integers attribute.
pub(crate) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}

/// A float attribute.
pub(crate) fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: Some(v),
        r#type: attribute_type::FLOAT,
        ..Default::default()
    }
}

/// A graph input or output of element type float and the given dims (a string is a dynamic,
/// named dimension).
pub(crate) fn value_info(name: &str, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Named(s) => dimension::Value::DimParam((*s).to_string()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: DATA_TYPE_FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        doc_string: doc.into(),
    }
}

/// One dimension of a declared input or output.
pub(crate) enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A dynamic size with this name (the batch, `"N"`).
    Named(&'static str),
}

/// Nodes and initializers of a graph under construction.
#[derive(Default)]
pub(crate) struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    used: std::collections::HashSet<String>,
}

impl GraphBuilder {
    /// A name not used yet, `base` itself if possible (`base_1`, `base_2`... otherwise).
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "v" } else { base };
        let mut name = base.to_string();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// Reserves `name` exactly (graph inputs and outputs); `false` if it was taken.
    pub(crate) fn reserve(&mut self, name: &str) -> bool {
        self.used.insert(name.to_string())
    }

    /// A float constant of shape `dims` named after `base`; returns its name.
    pub(crate) fn constant_f32(&mut self, base: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(base);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DATA_TYPE_FLOAT,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// An int64 constant of shape `dims` (`&[]` for a scalar); returns its name.
    pub(crate) fn constant_i64(&mut self, base: &str, dims: &[usize], data: &[i64]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(base);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DATA_TYPE_INT64,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// Adds an `op` node reading `inputs`, writing one output named after `out` (made unique);
    /// returns the output's name. The node is named as its output.
    pub(crate) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        out: &str,
    ) -> String {
        let name = self.fresh(out);
        self.node_into(op, inputs, attrs, &name);
        name
    }

    /// As [`GraphBuilder::node`] for an op with two outputs (`TopK`: values and indices);
    /// returns both names.
    pub(crate) fn node2(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        out: &str,
    ) -> (String, String) {
        let first = self.fresh(out);
        let second = self.fresh(&format!("{out}.indices"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![first.clone(), second.clone()],
            name: first.clone(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        (first, second)
    }

    /// As [`GraphBuilder::node`], writing exactly `out` (already reserved).
    pub(crate) fn node_into(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        out: &str,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: out.to_string(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// The finished graph.
    pub(crate) fn finish(
        self,
        name: &str,
        doc: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
    ) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: name.into(),
            initializer: self.initializers,
            doc_string: doc.into(),
            input: inputs,
            output: outputs,
            value_info: Vec::new(),
        }
    }
}
