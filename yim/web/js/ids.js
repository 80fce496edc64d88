// Random ids for device ids and client_msg_ids. crypto.getRandomValues works on plain
// http:// pages too, where crypto.randomUUID does not exist (no secure context).

export function randomId(bytes = 16) {
  const a = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}
