/**
 * Incremental detokenizer: bytes of a multi-byte UTF-8 character that is not complete yet are
 * held back until the next push (or emitted as U+FFFD by flush if it never completes).
 */
export interface StreamDecoder {
  push(ids: number[]): string;
  flush(): string;
}

export function createStreamDecoder(toBytes: (ids: number[], atStart: boolean) => Uint8Array): StreamDecoder {
  const dec = new TextDecoder("utf-8");
  let atStart = true;
  return {
    push(ids) {
      const bytes = toBytes(ids, atStart);
      // Tokens left out (control tokens) do not end the start: SentencePiece's prefix space is
      // dropped from the first text.
      if (bytes.length > 0) atStart = false;
      return dec.decode(bytes, { stream: true });
    },
    flush() {
      return dec.decode();
    },
  };
}
