//! The tensors a model is run on and answers with.
//!
//! Inputs are built before a session is taken, so that a caller holding a
//! pool of sessions locks one only while the model runs. Outputs are read
//! in place: the slices borrow ONNX Runtime's buffers, nothing is copied.

use ort::session::SessionOutputs;
use ort::value::{
    DynValue, PrimitiveTensorElementType, Tensor, TensorElementType, TensorRef, ValueRef, ValueType,
};

use crate::error::{Error, Result};

/// A row-major float32 matrix `[rows, width]` borrowed as a model's single
/// input: the shape of `/predict` and of the models aurum trains.
pub struct Matrix<'a> {
    pub(crate) tensor: TensorRef<'a, f32>,
}

impl std::fmt::Debug for Matrix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matrix").finish_non_exhaustive()
    }
}

impl<'a> Matrix<'a> {
    /// Views `values` as `rows` rows of `width` columns, without copying.
    /// Fails when they do not hold `rows * width` values.
    #[inline]
    pub fn new(values: &'a [f32], rows: usize, width: usize) -> Result<Self> {
        TensorRef::from_array_view(([rows, width], values))
            .map(|tensor| Matrix { tensor })
            .map_err(|source| Error::Input { source })
    }
}

/// The values of one input tensor, row-major, by element type (those the
/// Open Inference Protocol's JSON carries).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// float32.
    F32(Vec<f32>),
    /// float64.
    F64(Vec<f64>),
    /// int64.
    I64(Vec<i64>),
    /// int32.
    I32(Vec<i32>),
    /// bool.
    Bool(Vec<bool>),
}

/// Named input tensors for [`Model::run`](crate::Model::run).
#[derive(Default)]
pub struct Inputs {
    pub(crate) values: Vec<(String, DynValue)>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Inputs {
    /// No inputs yet, with room for `capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        Inputs {
            values: Vec::with_capacity(capacity),
        }
    }

    /// Adds the input `name` of `shape` holding `data`. Fails when `data`
    /// does not hold as many values as `shape` says.
    pub fn push(&mut self, name: String, shape: Vec<i64>, data: TensorData) -> Result<()> {
        let value = match data {
            TensorData::F32(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
            TensorData::F64(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
            TensorData::I64(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
            TensorData::I32(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
            TensorData::Bool(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        }
        .map_err(|source| Error::Input { source })?;
        self.values.push((name, value));
        Ok(())
    }
}

/// What one run of a model answered, borrowed from its session until
/// dropped.
pub struct Outputs<'s> {
    pub(crate) inner: SessionOutputs<'s>,
}

impl std::fmt::Debug for Outputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.inner.keys()).finish()
    }
}

impl Outputs<'_> {
    /// How many outputs there are.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape and values of the output at `index`, read as float32 (the
    /// `/predict` path, which knows its output's position in advance).
    #[inline]
    pub fn f32(&self, index: usize) -> Result<(&[i64], &[f32])> {
        let count = self.inner.len();
        if index >= count {
            return Err(Error::NoOutput { index, count });
        }
        let (shape, values) = self.inner[index]
            .try_extract_tensor::<f32>()
            .map_err(|source| Error::Output { source })?;
        Ok((&shape[..], values))
    }

    /// Every output with its name, in the model's order.
    pub fn iter(&self) -> impl Iterator<Item = Output<'_>> {
        self.inner
            .iter()
            .map(|(name, value)| Output { name, value })
    }
}

/// One output of a run.
pub struct Output<'a> {
    name: &'a str,
    value: ValueRef<'a>,
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An output tensor's values, borrowed, by element type (those the Open
/// Inference Protocol's JSON carries).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TensorSlice<'a> {
    /// float32.
    F32(&'a [f32]),
    /// float64.
    F64(&'a [f64]),
    /// int64.
    I64(&'a [i64]),
    /// int32.
    I32(&'a [i32]),
    /// bool.
    Bool(&'a [bool]),
}

impl<'a> Output<'a> {
    /// The output's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The element type as ONNX Runtime names it (`f32`, `i64`, `String`, as
    /// in [`TensorSpec::dtype`](crate::TensorSpec::dtype)); `None` when the
    /// output is not a tensor (a sequence or a map).
    pub fn element_type(&self) -> Option<String> {
        match self.value.dtype() {
            ValueType::Tensor { ty, .. } => Some(ty.to_string()),
            _ => None,
        }
    }

    /// The output's type as ONNX Runtime describes it (e.g.
    /// `Sequence<Map<i64, f32>>`), for messages.
    pub fn value_type(&self) -> String {
        self.value.dtype().to_string()
    }

    /// The shape and values, read as float32.
    pub fn f32(&self) -> Result<(&[i64], &[f32])> {
        self.extract::<f32>()
    }

    /// The shape and values when the output is a tensor of an element type
    /// [`TensorSlice`] holds; `None` for other tensors and for values that
    /// are not tensors.
    pub fn tensor(&self) -> Result<Option<(&[i64], TensorSlice<'_>)>> {
        let ValueType::Tensor { ty, .. } = self.value.dtype() else {
            return Ok(None);
        };
        let read = match ty {
            TensorElementType::Float32 => {
                let (shape, values) = self.extract::<f32>()?;
                (shape, TensorSlice::F32(values))
            }
            TensorElementType::Float64 => {
                let (shape, values) = self.extract::<f64>()?;
                (shape, TensorSlice::F64(values))
            }
            TensorElementType::Int64 => {
                let (shape, values) = self.extract::<i64>()?;
                (shape, TensorSlice::I64(values))
            }
            TensorElementType::Int32 => {
                let (shape, values) = self.extract::<i32>()?;
                (shape, TensorSlice::I32(values))
            }
            TensorElementType::Bool => {
                let (shape, values) = self.extract::<bool>()?;
                (shape, TensorSlice::Bool(values))
            }
            _ => return Ok(None),
        };
        Ok(Some(read))
    }

    fn extract<T: PrimitiveTensorElementType>(&self) -> Result<(&[i64], &[T])> {
        let (shape, values) = self
            .value
            .try_extract_tensor::<T>()
            .map_err(|source| Error::Output { source })?;
        Ok((&shape[..], values))
    }
}
