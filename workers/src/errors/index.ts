export * from "./api-error";
export { errorHandler, notFoundHandler, toApiError } from "./handler";
