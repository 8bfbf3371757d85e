//! Writing ONNX models.
//!
//! The ONNX format is a protobuf (`onnx.proto`, IR version 8 with opset 17
//! here). Only the messages aurum writes are declared, with prost, using the
//! field numbers of the ONNX specification; nothing is generated or downloaded
//! at build time. The writer knows nothing of training: it takes names,
//! shapes and float constants, so training exports its models with it and
//! tests and benchmarks build small models the same way.

use prost::Message;

/// ONNX `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// The IR version written (ONNX 1.10+, opset 17 era).
const IR_VERSION: i64 = 8;
/// The default-domain opset written.
pub const OPSET: i64 = 17;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(string, tag = "6")]
    doc_string: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named dynamic size, e.g. `batch`.
    Dynamic(&'static str),
}

/// Builds a float-only ONNX graph node by node.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    metadata: Vec<StringStringEntryProto>,
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            graph: GraphProto {
                name: name.to_string(),
                ..GraphProto::default()
            },
            metadata: Vec::new(),
        }
    }

    /// Declares a float graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.input.push(value_info(name, dims));
        self
    }

    /// Declares a float graph output.
    pub fn output(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.graph.output.push(value_info(name, dims));
        self
    }

    /// Adds a float constant.
    pub fn constant(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
        self.graph.initializer.push(TensorProto {
            dims: dims.to_vec(),
            data_type: FLOAT,
            float_data: values.to_vec(),
            name: name.to_string(),
        });
        self
    }

    /// Adds an operator of the default domain.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], outputs: &[&str]) -> &mut Self {
        let index = self.graph.node.len();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: format!("{op_type}_{index}"),
            op_type: op_type.to_string(),
        });
        self
    }

    /// Adds a model metadata entry.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.metadata.push(StringStringEntryProto {
            key: key.to_string(),
            value: value.to_string(),
        });
        self
    }

    /// Serializes the model.
    pub fn finish(&self, doc: &str) -> Vec<u8> {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "aurum".to_string(),
            // The workspace's version (every aurum crate shares it), so the
            // bytes do not depend on which crate holds the writer.
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            doc_string: doc.to_string(),
            graph: Some(self.graph.clone()),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: self.metadata.clone(),
        }
        .encode_to_vec()
    }
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Dim::Fixed(v) => Dimension {
                                dim_value: Some(*v),
                                dim_param: None,
                            },
                            Dim::Dynamic(p) => Dimension {
                                dim_value: None,
                                dim_param: Some(p.to_string()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_model_reads_back_as_built() {
        let mut g = GraphBuilder::new("linear");
        g.input("x", &[Dim::Dynamic("batch"), Dim::Fixed(2)])
            .output("y", &[Dim::Dynamic("batch"), Dim::Fixed(1)])
            .constant("w", &[2, 1], &[0.5, -1.5])
            .node("MatMul", &["x", "w"], &["z"])
            .node("Sigmoid", &["z"], &["y"])
            .metadata("aurum.features", "a,b");
        let bytes = g.finish("test model");
        let model = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(model.ir_version, IR_VERSION);
        assert_eq!(model.producer_name, "aurum");
        assert_eq!(model.doc_string, "test model");
        assert_eq!(model.opset_import.len(), 1);
        assert_eq!(model.opset_import[0].version, OPSET);
        assert_eq!(model.metadata_props[0].key, "aurum.features");
        let graph = model.graph.unwrap();
        assert_eq!(graph.name, "linear");
        let names: Vec<&str> = graph.node.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["MatMul_0", "Sigmoid_1"]);
        assert_eq!(graph.initializer[0].float_data, [0.5, -1.5]);
        let dims = &graph.input[0]
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .unwrap()
            .dim;
        assert_eq!(dims[0].dim_param.as_deref(), Some("batch"));
        assert_eq!(dims[1].dim_value, Some(2));
        // The same graph writes the same bytes.
        assert_eq!(g.finish("test model"), bytes);
    }
}
