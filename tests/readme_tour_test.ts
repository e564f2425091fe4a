/**
 * The README's "Try it" tour, run as written: its listener command and its curl script, read
 * from README.md, against a real gateway process on a free port. Each `# → ` line is the answer
 * the command above it must print (`…` stands for any text); the `text` block is a line the
 * listener must print after the script ran.
 */
import assert from "node:assert/strict";
import { collectLines, delay, GatewayProcess } from "./support/process.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const README = await Deno.readTextFile(new URL("../README.md", import.meta.url));

/** The text of the section under `## <heading>`, up to the next `## `. */
function section(markdown: string, heading: string): string {
  const start = markdown.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `README.md has a "## ${heading}" section`);
  const end = markdown.indexOf("\n## ", start + 4);
  return markdown.slice(start, end < 0 ? undefined : end);
}

function codeBlocks(text: string): { info: string; body: string }[] {
  return [...text.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((m) => ({
    info: m[1],
    body: m[2],
  }));
}

/** A README answer line as a pattern: `…` is any text, everything else is literal. */
function answerPattern(expected: string): RegExp {
  const parts = expected.split("…").map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${parts.join(".*?")}$`);
}

interface Step {
  command: string;
  answers: string[];
}

/** Splits a shell block into commands (with their continuation lines) and their answers. */
function steps(script: string): Step[] {
  const found: { lines: string[]; answers: string[] }[] = [];
  let continued = false;
  for (const line of script.split("\n")) {
    if (continued) {
      found.at(-1)!.lines.push(line);
    } else if (line.startsWith("# → ")) {
      found.at(-1)!.answers.push(line.slice("# → ".length));
    } else if (line.trim() !== "" && !line.startsWith("#")) {
      found.push({ lines: [line], answers: [] });
    }
    // A line ending in `\` or `|` goes on on the next one.
    continued = found.length > 0 && /[\\|]$/.test(line) && !line.startsWith("#");
  }
  return found.map((f) => ({ command: f.lines.join("\n"), answers: f.answers }));
}

Deno.test("README: the tour runs as written (listener, curl, and the message frame it prints)", async () => {
  const tour = section(README, "Try it");
  const [listenBlock, curlBlock, frameBlock] = codeBlocks(tour);
  assert.equal(listenBlock.info, "sh");
  assert.equal(curlBlock.info, "sh");
  assert.equal(frameBlock.info, "text");

  await using gateway = await GatewayProcess.start();
  const local = (text: string) => text.replaceAll("localhost:8000", `127.0.0.1:${gateway.port}`);

  // Second terminal: the listener, as the README gives it (npx's Deno is this Deno).
  const [listen] = steps(listenBlock.body);
  const command = listen.command.replace("npx --yes deno@2.9.6", `'${Deno.execPath()}'`);
  const listener = new Deno.Command("sh", {
    args: ["-c", `exec ${command}`],
    cwd: ROOT,
    env: { GATEWAY_URL: gateway.url, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const heard: string[] = [];
  const drained = Promise.all([
    collectLines(listener.stdout, heard),
    collectLines(listener.stderr, []),
  ]);
  const hears = async (expected: string) => {
    const pattern = answerPattern(expected);
    const deadline = Date.now() + 15_000;
    while (!heard.some((line) => pattern.test(line))) {
      assert.ok(
        Date.now() < deadline,
        `the listener never printed ${expected}:\n${heard.join("\n")}`,
      );
      await delay(50);
    }
  };
  try {
    for (const answer of listen.answers) await hears(answer);

    // Third terminal: the curl script, one command at a time, each answer checked.
    const curlSteps = steps(curlBlock.body);
    const marker = "@@tour-step-end@@";
    const script = ["set -e", ...curlSteps.map((s) => `${local(s.command)}\necho\necho ${marker}`)]
      .join("\n");
    const run = await new Deno.Command("bash", {
      args: ["-c", script],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(run.stdout);
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr) + out);
    const outputs = out.split(`${marker}\n`).slice(0, curlSteps.length).map((o) => o.trim());
    assert.equal(outputs.length, curlSteps.length);
    curlSteps.forEach((step, i) => {
      if (step.answers.length === 0) {
        assert.equal(outputs[i], "", `"${step.command}" prints nothing`);
        return;
      }
      const printed = outputs[i].split("\n");
      assert.equal(printed.length, step.answers.length, `${step.command}\nprinted:\n${outputs[i]}`);
      step.answers.forEach((answer, j) =>
        assert.match(printed[j], answerPattern(answer), `${step.command}\nanswered:\n${printed[j]}`)
      );
    });

    // Back to the second terminal: the message frame.
    for (const line of frameBlock.body.trim().split("\n")) await hears(line);
  } finally {
    listener.kill("SIGINT");
    const status = await listener.status;
    await drained;
    assert.equal(status.code, 0, "Ctrl-C stops the listener cleanly");
  }
});
