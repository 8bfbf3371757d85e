//! Answers as Flight data: record batches filtered by time, encoded in
//! messages, and the streams that produce them.

use std::future::Future;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{BooleanArray, RecordBatch};
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tonic::{Status, Streaming};

use crate::command::*;
use crate::feast::FeastCommand;

/// The rows of `batch` whose timestamp column (`column`, microseconds) is
/// in `[start, end)`.
pub(crate) fn within(
    batch: &RecordBatch,
    column: usize,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let times = arrow_cast::cast(
        batch.column(column),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    let times = times.as_primitive::<TimestampMicrosecondType>();
    let keep: BooleanArray = times
        .iter()
        .map(|t| Some(t.is_some_and(|t| start.is_none_or(|s| t >= s) && end.is_none_or(|e| t < e))))
        .collect();
    arrow::compute::filter_record_batch(batch, &keep)
}

/// Streams `batches` as Flight data with `schema` first.
pub(crate) fn encode(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> BoxStream<'static, Result<FlightData, Status>> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(|e| Status::internal(e.to_string()))
        .boxed()
}

/// Reads the command from the descriptor of a client stream's first
/// message (`call` names the call in errors) and decodes the rest as record
/// batches. A first message with only the descriptor (as pyarrow sends it
/// for `DoExchange`) carries no data to decode.
pub(crate) async fn command_and_batches(
    call: &str,
    mut stream: Streaming<FlightData>,
) -> Result<(Call, FlightRecordBatchStream), Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument(format!("{call} sent no data")))?;
    let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
        Status::invalid_argument(format!(
            "{call}'s first message carries no flight descriptor"
        ))
    })?;
    let command = match FeastCommand::from_json(&descriptor.cmd) {
        Some(feast) => Call::Feast(feast),
        None => Call::Aurum(Command::from_descriptor(&descriptor)?),
    };
    let lead = (!first.data_header.is_empty()).then_some(Ok(first));
    let data = futures::stream::iter(lead)
        .chain(stream)
        .map_err(FlightError::from);
    Ok((command, FlightRecordBatchStream::new_from_flight_data(data)))
}

/// Runs `produce` as a task feeding a stream of at most `capacity` waiting
/// items: what it sends is streamed, an error it returns ends the stream
/// with that status, and so does a panic (as `INTERNAL`), so a failure
/// never looks like a complete answer.
pub(crate) fn async_stream<T, F, Fut>(
    capacity: usize,
    produce: F,
) -> BoxStream<'static, Result<T, Status>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
    let errors = sender.clone();
    let work = tokio::spawn(produce(sender));
    tokio::spawn(async move {
        let failure = match work.await {
            Ok(Ok(())) => return,
            Ok(Err(status)) => status,
            Err(e) => Status::internal(format!("the server failed while answering: {e}")),
        };
        let _ = errors.send(Err(failure)).await;
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed()
}
