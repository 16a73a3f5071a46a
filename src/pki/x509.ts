// @peculiar/x509 resolves its algorithm providers through tsyringe, which needs the Reflect
// metadata polyfill loaded first: every module here imports the library through this one.
import "reflect-metadata";

export * from "@peculiar/x509";
