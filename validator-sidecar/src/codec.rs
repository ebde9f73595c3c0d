//! The gRPC codec of `ValidatorService`: requests decoded by prost into the generated
//! messages, answers written by [`crate::answer`] straight from the verdict (the same
//! bytes prost would write for the generated responses).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use crate::answer::EncodeAnswer;

/// Decodes `Request` with prost and encodes `Answer` itself.
pub struct AnswerCodec<Request, Answer> {
    types: PhantomData<fn(Request) -> Answer>,
}

impl<Request, Answer> Default for AnswerCodec<Request, Answer> {
    fn default() -> Self {
        AnswerCodec { types: PhantomData }
    }
}

impl<Request, Answer> Codec for AnswerCodec<Request, Answer>
where
    Request: Message + Default + Send + 'static,
    Answer: EncodeAnswer + Send + 'static,
{
    type Encode = Answer;
    type Decode = Request;
    type Encoder = AnswerEncoder<Answer>;
    type Decoder = ProstDecoder<Request>;

    fn encoder(&mut self) -> Self::Encoder {
        AnswerEncoder {
            answer: PhantomData,
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

/// Writes each answer into tonic's frame buffer.
pub struct AnswerEncoder<Answer> {
    answer: PhantomData<fn(Answer)>,
}

impl<Answer: EncodeAnswer> Encoder for AnswerEncoder<Answer> {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, answer: Answer, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        answer.encode(buf);
        Ok(())
    }
}
