/**
 * GPT-2's reversible byte ↔ unicode-character map: printable bytes map to themselves, the rest
 * to U+0100 onward, so every byte string is a string of visible characters.
 */
const byteToChar: string[] = new Array(256);
/** Byte of each char code the map uses (all below 0x144), -1 elsewhere: a table, not a Map of
 *  one-character strings (a char above 0xff would be a fresh string to hash per lookup). */
const charToByte = new Int16Array(0x144).fill(-1);
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const code = printable ? b : 256 + n++;
    byteToChar[b] = String.fromCharCode(code);
    charToByte[code] = b;
  }
}

/** UTF-8 bytes → the byte-level string BPE works on. */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += byteToChar[bytes[i]];
  return s;
}

/** A vocabulary entry → its bytes; undefined when it holds a character outside the map. */
export function byteLevelToBytes(token: string): Uint8Array | undefined {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const c = token.charCodeAt(i);
    const b = c < charToByte.length ? charToByte[c] : -1;
    if (b < 0) return undefined;
    out[i] = b;
  }
  return out;
}
