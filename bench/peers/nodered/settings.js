// Node-RED settings for the peer benchmark (bench/peers/nodered.py): headless, loopback only,
// no editor, no palette installs, no telemetry. The port comes from NODE_RED_PORT.
module.exports = {
    uiPort: parseInt(process.env.NODE_RED_PORT || "1880", 10),
    uiHost: "127.0.0.1",
    flowFile: "flow.json",
    flowFilePretty: true,
    credentialSecret: false,
    disableEditor: true,
    httpNodeRoot: false,
    logging: { console: { level: "info", metrics: false, audit: false } },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    editorTheme: { projects: { enabled: false }, palette: { allowInstall: false } },
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    telemetry: { enabled: false },
    functionGlobalContext: {},
    exportGlobalContextKeys: false,
};
