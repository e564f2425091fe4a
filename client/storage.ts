/**
 * Where the client keeps the logged-in user and its session between app restarts.
 *
 * One small interface with three implementations, like hono's adapters: `localStorage` in
 * browsers (the default there), memory (the default elsewhere), and a JSON file for Deno and
 * Node programs that want a restart to keep the session.
 */

/** A key-value store; every method may be synchronous or return a promise. */
export interface StorageAdapter {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
  removeItem(key: string): void | Promise<void>;
}

/** A store that lives as long as the process (the default outside browsers). */
export function memoryStorage(): StorageAdapter {
  const items = new Map<string, string>();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, value),
    removeItem: (key) => void items.delete(key),
  };
}

/**
 * The file operations {@link fileStorage} needs. `Deno` has them as they are; in Node pass
 * `{ readTextFile: (p) => fs.readFile(p, "utf8"), writeTextFile: fs.writeFile,
 * remove: (p) => fs.rm(p, { force: true }) }` with `fs` from `node:fs/promises`.
 */
export interface TextFileSystem {
  readTextFile(path: string): Promise<string>;
  writeTextFile(path: string, data: string): Promise<void>;
  remove(path: string): Promise<void>;
}

/** A store kept in one JSON file (Deno by default; pass `fs` for Node). */
export function fileStorage(path: string, fs?: TextFileSystem): StorageAdapter {
  const files = fs ?? (globalThis as unknown as { Deno?: TextFileSystem }).Deno;
  if (files === undefined) {
    throw new Error("fileStorage: pass a TextFileSystem outside Deno (see its JSDoc).");
  }
  // Writes are chained so that two quick updates can't land in the wrong order.
  let queue: Promise<unknown> = Promise.resolve();
  const read = async (): Promise<Record<string, string>> => {
    try {
      const parsed: unknown = JSON.parse(await files.readTextFile(path));
      return typeof parsed === "object" && parsed !== null ? parsed as Record<string, string> : {};
    } catch {
      return {}; // Missing or unreadable: start empty.
    }
  };
  const update = (change: (items: Record<string, string>) => void): Promise<void> => {
    const next = queue.then(async () => {
      const items = await read();
      change(items);
      if (Object.keys(items).length === 0) {
        await files.remove(path).catch(() => {});
      } else {
        await files.writeTextFile(path, JSON.stringify(items));
      }
    });
    queue = next.catch(() => {});
    return next;
  };
  return {
    getItem: async (key) => {
      await queue;
      return (await read())[key] ?? null;
    },
    setItem: (key, value) => update((items) => void (items[key] = value)),
    removeItem: (key) => update((items) => void delete items[key]),
  };
}

/** `localStorage` when running in a browser page, memory elsewhere. */
export function defaultStorage(): StorageAdapter {
  const g = globalThis as unknown as { document?: unknown; localStorage?: StorageAdapter };
  // Deno also has a `localStorage`, persisted per script: only use it in a real page.
  if (g.document !== undefined && g.localStorage !== undefined) {
    try {
      return g.localStorage;
    } catch {
      // Access may throw in sandboxed frames.
    }
  }
  return memoryStorage();
}
