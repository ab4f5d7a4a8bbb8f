// Starts `tnx lsp` (the language server shipped with tunix-dsl) for .tnx files.
// The server speaks LSP over stdin/stdout; everything else lives in Python.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate() {
  const command = vscode.workspace.getConfiguration("tnx").get("server.command", "tnx");
  const server = { command, args: ["lsp"] };
  client = new LanguageClient("tnx", "tnx language server", server, {
    documentSelector: [
      { scheme: "file", language: "tnx" },
      { scheme: "untitled", language: "tnx" },
    ],
  });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
