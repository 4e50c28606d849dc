// A Sparkplug B edge node made with Eclipse Tahu's sparkplug-client (npm), for
// tests/integration/test_sparkplug_npm.py: it publishes NBIRTH, DBIRTH, NDATA, DDATA,
// DDEATH and, on stop, NDEATH, then exits. Usage: node publish.js <mqtt url> <group> <edge>
"use strict";
const sparkplug = require("sparkplug-client");

const [serverUrl, groupId, edgeNode] = process.argv.slice(2);
if (!serverUrl || !groupId || !edgeNode) {
  console.error("usage: node publish.js <mqtt url> <group> <edge node>");
  process.exit(2);
}
const device = "pump1";
const T0 = 1767268800000; // 2026-01-01T12:00:00Z

const client = sparkplug.newClient({
  serverUrl,
  groupId,
  edgeNode,
  clientId: `spb-test-${process.pid}`,
  username: "",
  password: "",
  publishDeath: true, // an NDEATH on stop(), as the broker would send the Will
});

client.on("error", (err) => {
  console.error("sparkplug-client error:", err && err.message);
  process.exit(1);
});

client.on("birth", () => {
  // Node metrics: names with folders and spaces, aliases defined here, used alone in NDATA.
  client.publishNodeBirth({
    timestamp: T0,
    metrics: [
      { name: "Node Control/Rebirth", type: "Boolean", value: false },
      { name: "Supply/Voltage V", alias: 1, type: "Float", value: 230.5 },
      { name: "Uptime", alias: 2, type: "UInt64", value: 3600 },
      { name: "Firmware", alias: 3, type: "String", value: "1.2.3" },
    ],
  });
  client.publishDeviceBirth(device, {
    timestamp: T0,
    metrics: [
      { name: "Flow/Rate", alias: 10, type: "Double", value: 12.25 },
      { name: "Running", alias: 11, type: "Boolean", value: true },
      { name: "Offset", alias: 12, type: "Int8", value: -5 },
      { name: "Pressure", alias: 13, type: "Int32", value: null },
    ],
  });
  client.publishNodeData({
    timestamp: T0 + 1000,
    metrics: [
      { alias: 1, type: "Float", value: 231 },
      { alias: 2, type: "UInt64", value: 3601 },
    ],
  });
  client.publishDeviceData(device, {
    timestamp: T0 + 2000,
    metrics: [
      { alias: 10, type: "Double", value: 13.5 },
      { alias: 11, type: "Boolean", value: false },
      { alias: 12, type: "Int8", value: -7 },
      { alias: 13, type: "Int32", value: -40000 },
      // a historical value with its own time
      { alias: 10, type: "Double", value: 11.0, timestamp: T0 - 60000, isHistorical: true },
    ],
  });
  client.publishDeviceDeath(device, { timestamp: T0 + 3000 });
  // stop() publishes the NDEATH and ends the connection once everything is sent.
  client.stop();
  client.client.once("close", () => process.exit(0));
});
