// A run's events over the WebSocket (each connection with a fresh single-use ticket), resumed after a drop with ?after=<last seq applied>,
// so nothing is lost; the caller ignores any seq it has already applied, so nothing shows twice.
import { webSocketQuery } from "./auth.js";

const CLOSE_NORMAL = 1000;
const REFUSED = { 4401: "Your credential was refused for the live stream.", 4404: "This run does not exist.",
  4400: "The page asked for the stream in a way the server refused." };

/**
 * watch(id, {lastSeq, isFinished, onEvent, onState}): lastSeq() gives the seq to resume after;
 * isFinished() says whether the terminal event was seen; onEvent(event) gets each message;
 * onState(state, detail) hears "live", "reconnecting", "ended" or "refused".
 */
export function watch(executionId, { lastSeq, isFinished, onEvent, onState }) {
  let socket = null;
  let stopped = false;
  let delay = 250;

  async function connect() {
    if (stopped) return;
    let ticket;
    try {
      ticket = await webSocketQuery();
    } catch (failure) {
      if (failure.refused) onState("refused", failure.message);
      else retry();
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/api/v1/Execution/ws/${executionId}?after=${lastSeq()}&${ticket}`);
    socket.onopen = () => {
      delay = 250;
      onState("live");
    };
    socket.onmessage = (message) => onEvent(JSON.parse(message.data));
    socket.onclose = (closed) => {
      if (stopped) return;
      if (closed.code === CLOSE_NORMAL && isFinished()) {
        onState("ended");
      } else if (REFUSED[closed.code]) {
        onState("refused", closed.reason || REFUSED[closed.code]);
      } else {
        retry();
      }
    };
  }

  function retry() {
    onState("reconnecting");
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 5000);
  }

  connect();
  return {
    stop() {
      stopped = true;
      socket?.close();
    },
  };
}
