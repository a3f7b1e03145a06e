// The client's wire types and the committed browser module stay in step with their sources.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./harness.js";

const JS = join(ROOT, "clients/js");
function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { cwd: JS, encoding: "utf8", stdio: "pipe", timeout: 120_000 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${e.stdout ?? ""}${e.stderr ?? ""}`);
  }
}

describe("drift", () => {
  it("schema.generated.ts matches the server's msgspec Structs (regenerating gives no diff)", () => {
    const python = existsSync(join(ROOT, ".venv/bin/python")) ? join(ROOT, ".venv/bin/python") : "python3";
    expect(run(python, ["scripts/gen_schema.py", "--check"])).toContain("up to date");
  });

  it("the hand-written types match the generated ones (tsc, src/drift-check.ts)", () => {
    run(process.execPath, [join(JS, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json", "--noEmit"]);
  });

  it("streamcore/static/streamcore.js is the build of src/", () => {
    expect(run(process.execPath, ["scripts/bundle-static.mjs", "--check"])).toContain("up to date");
  });
});
