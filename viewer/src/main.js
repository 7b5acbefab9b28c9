// The match viewer: every call goes over gRPC-Web to the edge that served this page, with
// the client code protoc-gen-es generated from proto/ (no hand-written wire encoding).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { CheeseService, CheeseType } from "../gen/api/cheese_pb.js";
import { Movie } from "../gen/api/movie_pb.js";
import { Encoding, Soccer } from "../gen/api/soccer_pb.js";

const transport = createGrpcWebTransport({ baseUrl: location.origin });
const soccer = createClient(Soccer, transport);
const movies = createClient(Movie, transport);
const cheese = createClient(CheeseService, transport);

const $ = (id) => document.getElementById(id);
const canvas = $("pitch");
const pitch = canvas.getContext("2d");
let playing = null;

function show(id, text) {
  $(id).textContent = String(text);
}

function failed(what, error) {
  show("error", `${what}: ${error.message}`);
}

// A stream that breaks on its way (its replica drained or died, the edge was replaced) or
// stalls is called again from the next frame, as `client soccer watch` does
// (client/watch.py): no frame is lost and none is shown twice. Errors that the server
// meant (not found, refused) end the play.
const RESUMABLE = new Set([Code.Unavailable, Code.Internal, Code.Unknown, Code.Aborted]);
// Calls again for this long without a frame before giving up: long enough to cover the
// edge itself being replaced (stop-first, docs/operations.md), when connections are refused
// for a few seconds, which the browser reports at once rather than waiting as gRPC does.
const GIVE_UP_MS = 30000;
// No frame for this long (the first one: a bit longer, it waits for a decoder) is a stall:
// a frozen replica closes nothing, so only the missing frames tell (client/stall.py).
const STALL_MS = 2000;
const FIRST_FRAME_MS = 3000;

async function play(match) {
  playing?.abort();
  const stop = new AbortController();
  playing = stop;
  show("error", "");
  show("status", "connecting");
  show("replica", "-");
  let shown = 0;
  let resumed = 0;
  let lost = 0;
  let longestGap = 0;
  let last = null; // the last frame index shown (a bigint)
  let arrived = null;
  const times = [];
  show("resumed", 0);
  show("lost", 0);
  show("gap", 0);
  let failures = 0;
  let since = performance.now(); // the last frame, or the start
  for (;;) {
    const attempt = new AbortController();
    const cancel = () => attempt.abort();
    stop.signal.addEventListener("abort", cancel);
    let stalled = false;
    let timer = null;
    const arm = (ms) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        stalled = true;
        attempt.abort();
      }, ms);
    };
    arm(FIRST_FRAME_MS);
    const request = { id: match, encoding: Encoding.JPEG };
    if (last !== null) request.startFrame = last + 1n;
    try {
      const frames = soccer.watch(request, {
        signal: attempt.signal,
        // The edge routes JPEG watches on a path that keeps a slow link near live (docs/failures-and-stress.md, slow links).
        headers: { "soccer-encoding": "jpeg" },
        onHeader: (headers) => show("replica", headers.get("served-by") ?? "?"),
      });
      for await (const frame of frames) {
        arm(STALL_MS);
        const picture = await createImageBitmap(new Blob([frame.data], { type: "image/jpeg" }));
        pitch.drawImage(picture, 0, 0, canvas.width, canvas.height);
        picture.close();
        if (last !== null && frame.frameIndex > last + 1n) lost += Number(frame.frameIndex - last - 1n);
        last = frame.frameIndex;
        shown += 1;
        failures = 0;
        const now = performance.now();
        since = now;
        if (arrived !== null) longestGap = Math.max(longestGap, now - arrived);
        arrived = now;
        times.push(now);
        while (times.length && now - times[0] > 1000) times.shift();
        show("frame", frame.frameIndex);
        show("shown", shown);
        show("fps", times.length);
        show("skipped", frame.skippedFrames);
        show("lost", lost);
        show("gap", Math.round(longestGap));
        show("status", "playing");
      }
      show("status", "ended");
      return;
    } catch (error) {
      if (stop.signal.aborted) {
        show("status", "stopped");
        return;
      }
      const code = stalled ? Code.DeadlineExceeded : ConnectError.from(error).code;
      failures += 1;
      if ((!stalled && !RESUMABLE.has(code)) || performance.now() - since > GIVE_UP_MS) {
        show("status", "failed");
        failed("watch", error);
        return;
      }
      resumed += 1;
      show("resumed", resumed);
      show("status", stalled ? "stalled; resuming" : "broke; resuming");
      // A moment before calling again, longer each time in a row: the edge may be coming up.
      await new Promise((resolve) => setTimeout(resolve, Math.min(100 * 2 ** (failures - 1), 1000)));
    } finally {
      clearTimeout(timer);
      stop.signal.removeEventListener("abort", cancel);
    }
  }
}

async function listMovies() {
  const list = $("movies");
  try {
    for await (const movie of movies.getListMovies({})) {
      const item = document.createElement("li");
      item.textContent = `${movie.title} (${movie.director}, ${movie.rating.toFixed(1)})`;
      item.dataset.id = movie.id;
      list.append(item);
    }
  } catch (error) {
    failed("movies", error);
  }
}

async function orderCheese() {
  try {
    const answer = await cheese.order({ type: CheeseType.BRIE });
    show("cheese", `${CheeseType[answer.type]}, aged ${answer.age}`);
  } catch (error) {
    failed("cheese", error);
  }
}

$("watch").addEventListener("submit", (event) => {
  event.preventDefault();
  play($("match").value);
});
$("stop").addEventListener("click", () => playing?.abort());
$("order").addEventListener("click", orderCheese);
listMovies();
play($("match").value);
