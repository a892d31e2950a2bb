// Injected on demand (never declared in the manifest): exposes the extractor to the
// service worker's follow-up executeScript call, which returns its result.
import { extractPage } from './extract';

(globalThis as unknown as { glossExtractPage: () => unknown }).glossExtractPage = () => extractPage(document);
