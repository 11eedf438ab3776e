// Runs once, on the first start of an empty data volume, as the root user (the image's
// docker-entrypoint-initdb.d): the application's own user, allowed to read and write its
// database and nothing else. Rotating its password later: deploy/README.md, "Rotate credentials".
const database = process.env.THEODOLITE_DB || "theodolite";
db.getSiblingDB("admin").createUser({
  user: process.env.THEODOLITE_MONGO_USER,
  pwd: process.env.THEODOLITE_MONGO_PASSWORD,
  roles: [{ role: "readWrite", db: database }],
});
