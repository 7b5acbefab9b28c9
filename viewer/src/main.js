// The match viewer: every call goes over gRPC-Web to the edge that served this page, with
// the client code protoc-gen-es generated from proto/ (no hand-written wire encoding).
import { createClient } from "@connectrpc/connect";
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

async function play(match) {
  playing?.abort();
  const stop = new AbortController();
  playing = stop;
  show("error", "");
  show("status", "connecting");
  show("replica", "-");
  let shown = 0;
  const times = [];
  try {
    const frames = soccer.watch(
      { id: match, encoding: Encoding.JPEG },
      {
        signal: stop.signal,
        // The edge routes JPEG watches on a path that keeps a slow link near live (README).
        headers: { "soccer-encoding": "jpeg" },
        onHeader: (headers) => show("replica", headers.get("served-by") ?? "?"),
      },
    );
    for await (const frame of frames) {
      const picture = await createImageBitmap(new Blob([frame.data], { type: "image/jpeg" }));
      pitch.drawImage(picture, 0, 0, canvas.width, canvas.height);
      picture.close();
      shown += 1;
      const now = performance.now();
      times.push(now);
      while (times.length && now - times[0] > 1000) times.shift();
      show("frame", frame.frameIndex);
      show("shown", shown);
      show("fps", times.length);
      show("skipped", frame.skippedFrames);
      show("status", "playing");
    }
    show("status", "ended");
  } catch (error) {
    if (stop.signal.aborted) {
      show("status", "stopped");
    } else {
      show("status", "failed");
      failed("watch", error);
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
