// A client of the three services in Node.js, from proto/ alone (docs/clients.md):
//   node clients/node/call.js [HOST]
// Loads proto/api/*.proto at run time (@grpc/proto-loader), calls each service over mutual
// TLS with the certificates in certs/ (HOST defaults to 127.0.0.1, the edge's published
// ports), prints one JSON object, exits 1 on a surprise.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { protoPath: healthProto } = require("grpc-health-check");

const root = path.join(__dirname, "..", "..");
const host = process.argv[2] || "127.0.0.1";
const MARTIAN = "a8034f44-aee4-44cf-b32c-74cf452aaaae";

// Field names as in the .proto files, enums as their names, 64-bit integers as numbers.
const loading = { keepCase: true, enums: String, longs: Number, defaults: true };
const api = grpc.loadPackageDefinition(protoLoader.loadSync(
  ["api/cheese.proto", "api/movie.proto", "api/soccer.proto"],
  { ...loading, includeDirs: [path.join(root, "proto")] },
));
const health = grpc.loadPackageDefinition(protoLoader.loadSync(healthProto, loading)).grpc.health.v1;

const certs = (name) => fs.readFileSync(path.join(root, "certs", name));
const credentials = grpc.credentials.createSsl(certs("ca.crt"), certs("client.key"), certs("client.crt"));
// Node checks a certificate's name against a host name, never an IP address: dialling
// 127.0.0.1, ask for localhost, which every server certificate and the edge's name too.
const options = { "grpc.max_receive_message_length": 32 << 20, "grpc.ssl_target_name_override": "localhost" };
const deadline = (seconds = 10) => ({ deadline: Date.now() + seconds * 1000 });

const unary = (client, method, request) =>
  new Promise((resolve, reject) =>
    client[method](request, deadline(), (error, answer) => (error ? reject(error) : resolve(answer))));
const stream = (client, method, request, seconds) =>
  new Promise((resolve, reject) => {
    const answers = [];
    client[method](request, deadline(seconds))
      .on("data", (answer) => answers.push(answer))
      .on("error", reject)
      .on("end", () => resolve(answers));
  });

async function main() {
  const cheese = new api.cheesefarm.CheeseService(`${host}:50051`, credentials, options);
  const movie = new api.Movie(`${host}:50052`, credentials, options);
  const soccer = new api.stream.Soccer(`${host}:50053`, credentials, options);
  const done = {};
  done.Order = (await unary(cheese, "Order", { type: "BRIE" })).type;
  done.GetMovieByID = (await unary(movie, "GetMovieByID", { id: MARTIAN })).title;
  done["GetMovieByID unknown"] = await unary(movie, "GetMovieByID", { id: "no-such-movie" })
    .then(() => "answered", (error) => grpc.status[error.code]);
  done.GetListMovies = (await stream(movie, "GetListMovies", {})).length;
  done.Watch = (await stream(soccer, "Watch", { id: "demo", encoding: "JPEG", max_frames: 3 }, 30)).length;
  const checker = new health.Health(`${host}:50053`, credentials, options);
  done.Health = (await unary(checker, "Check", { service: "stream.Soccer" })).status;
  console.log(JSON.stringify(done));
  const expected = { Order: "BRIE", GetMovieByID: "The Martian", "GetMovieByID unknown": "NOT_FOUND", Watch: 3, Health: "SERVING" };
  const surprises = Object.keys(expected).filter((key) => done[key] !== expected[key]);
  if (surprises.length || done.GetListMovies < 1) {
    console.error(`unexpected: ${surprises.join(", ") || "GetListMovies"}`);
    process.exit(1);
  }
  process.exit(0);
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
